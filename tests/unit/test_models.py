import re

import pytest
import torch

from tomoloop.errors import TomoloopError
from tomoloop.metrics.semantic import confusion_matrix, scores
from tomoloop.networks.losses import cross_entropy
from tomoloop.networks.registry import MODELS, build_model


def test_unet_follows_seed_002_widths_down_to_256_channels_at_8x8():
    model = build_model("unet", in_channels=1, n_classes=3)
    shapes = []
    for block in model.down:
        block.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape[1:])))
    logits = model(torch.zeros(2, 1, 128, 128))
    assert logits.shape == (2, 3, 128, 128)
    assert shapes == [(16, 128, 128), (32, 64, 64), (64, 32, 32), (128, 16, 16), (256, 8, 8)]


def test_sides_not_divisible_by_16_are_refused():
    with pytest.raises(ValueError, match="divisible by 16"):
        build_model("unet")(torch.zeros(1, 1, 40, 48))


def test_unknown_architecture():
    with pytest.raises(TomoloopError, match="unet"):
        build_model("resnet")


def _toy_batch(generator, n=8, side=32):
    """Bright discs on a dark noisy background; label 1 inside the discs."""
    yy, xx = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    labels = torch.zeros(n, side, side, dtype=torch.long)
    for i in range(n):
        for _ in range(3):
            cy, cx = torch.randint(4, side - 4, (2,), generator=generator)
            r = torch.randint(3, 7, (1,), generator=generator)
            labels[i][(yy - cy) ** 2 + (xx - cx) ** 2 <= r**2] = 1
    images = labels.float() + 0.35 * torch.randn(n, side, side, generator=generator)
    return images[:, None], labels


@pytest.mark.slow  # trains a network
def test_unet_learns_a_toy_segmentation_far_above_chance():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = build_model("unet", in_channels=1, n_classes=2, base=8)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(100):
        images, labels = _toy_batch(generator)
        optimiser.zero_grad()
        cross_entropy(model(images), labels).backward()
        optimiser.step()
    model.eval()
    images, labels = _toy_batch(generator, n=16)
    with torch.no_grad():
        predicted = model(images).argmax(dim=1)
    result = scores(confusion_matrix(labels.numpy(), predicted.numpy(), 2))
    assert result.miou > 0.8, result  # predicting one class everywhere gives mIoU < 0.45 here


@pytest.mark.slow  # trains a network
def test_unet_overfits_a_tiny_batch(overfit):
    assert overfit(lambda: build_model("unet", 1, 3, base=8)) > 0.95


def test_a_saved_model_loads_back_identical():
    from tomoloop.networks.registry import ModelSpec, load_model, save_model

    spec = ModelSpec("unet", 1, 3, {"base": 4, "depth": 2}, ("pore", "nmc", "cbd"), tile=32)
    torch.manual_seed(0)
    model = spec.build().eval()
    loaded, loaded_spec = load_model(save_model(model, spec))
    assert loaded_spec == spec and not loaded.training
    image = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(image), loaded(image))
    with pytest.raises(TomoloopError, match="model checkpoint is not a readable checkpoint"):
        load_model(b"garbage")


def test_transfer_keeps_matching_weights_and_reports_the_fresh_head():
    from tomoloop.networks.registry import freeze, transfer_weights

    torch.manual_seed(0)
    parent = build_model("unet", 1, 3, base=4, depth=2)
    child = build_model("unet", 1, 2, base=4, depth=2)  # another number of classes
    fresh = transfer_weights(child, parent.state_dict())
    assert fresh == ["head.bias", "head.weight"]
    assert torch.equal(child.down[0][0].weight, parent.down[0][0].weight)
    frozen = freeze(child, ("down",))
    assert frozen == sum(1 for n, _ in child.named_parameters() if n.startswith("down"))
    assert not child.down[0][0].weight.requires_grad and child.head.weight.requires_grad
    with pytest.raises(TomoloopError, match="no parameters start with 'bottleneck': try encoder"):
        freeze(child, ("bottleneck",))
    with pytest.raises(TomoloopError, match="shares no weights"):
        transfer_weights(child, {"other.weight": torch.zeros(1)})


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_registered_architecture_keeps_the_contract(name):
    model = build_model(name, in_channels=1, n_classes=3)
    assert any(isinstance(m, torch.nn.Dropout | torch.nn.Dropout2d) for m in model.modules())
    logits = model(torch.rand(2, 1, 32, 48))
    assert logits.shape == (2, 3, 32, 48)
    with pytest.raises(ValueError, match="divisible by 16"):
        model(torch.zeros(1, 1, 40, 48))


def test_an_option_a_network_does_not_take_is_named_with_the_ones_it_does():
    with pytest.raises(TomoloopError, match=r"unet does not take options \['widht'\].*'base'"):
        build_model("unet", 1, 3, widht=8)


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"base": "abc"}, "unet option base='abc': give an integer (the default is 16)"),
        ({"base": 8.5}, "unet option base=8.5: give an integer"),
        ({"dropout": "high"}, "unet option dropout='high': give a number"),
    ],
)
def test_an_option_value_of_the_wrong_kind_is_named_with_what_it_takes(options, says):
    with pytest.raises(TomoloopError, match=re.escape(says)):
        build_model("unet", 1, 3, **options)
    small = build_model("unet", 1, 3, base=4, depth=2, dropout=0)  # 0 does for a float
    assert small.head.out_channels == 3


@pytest.mark.parametrize("name", sorted(MODELS))
def test_freeze_encoder_freezes_the_encoder_of_every_architecture(name):
    from tomoloop.networks.registry import freeze

    model = build_model(name, in_channels=1, n_classes=3)
    frozen = freeze(model, ("encoder",))
    training = [n for n, p in model.named_parameters() if p.requires_grad]
    assert 0 < frozen < len(list(model.parameters()))
    assert any(n.split(".")[-2] == "head" for n in training)  # the class head trains on
