"""Y-Net, TransforCNN and E-Net of Quenum et al. 2023, §3.2–3.4 (docs/references.md)."""

import pytest
import torch
from torch import nn

from tomoloop.inference.predict import predict_slice
from tomoloop.networks.enet import ENet, weight_grid
from tomoloop.networks.losses import cross_entropy
from tomoloop.networks.transforcnn import FourierPositions, TransforCNN, tokens_to_map
from tomoloop.networks.unet import UNet
from tomoloop.networks.ynet import YNet
from tomoloop.training.trainer import compute_loss


def tiny_ynet() -> YNet:
    return YNet(1, 3, base=4, dilated_width=4)


def tiny_transforcnn() -> TransforCNN:
    return TransforCNN(1, 3, dim=16, blocks=4, base=4)


def tiny_enet() -> ENet:
    return ENet.default(1, 3, unet={"base": 4}, transforcnn={"dim": 16, "blocks": 4, "base": 4})


def _backward(model: nn.Module, shape=(2, 1, 32, 48)) -> torch.Tensor:
    """Logits of a random batch, after one cross-entropy backward pass through them."""
    torch.manual_seed(0)
    images = torch.randn(shape)
    logits = model(images)
    cross_entropy(logits, torch.randint(0, 3, (shape[0], *shape[2:]))).backward()
    return logits


def _has_gradient(parameter: torch.Tensor) -> bool:
    return parameter.grad is not None and bool(parameter.grad.abs().sum() > 0)


@pytest.mark.parametrize("build", [tiny_ynet, tiny_transforcnn, tiny_enet])
def test_sides_not_divisible_by_16_are_refused(build):
    with pytest.raises(ValueError, match="divisible by 16"):
        build()(torch.zeros(1, 1, 40, 48))


@pytest.mark.parametrize("build", [tiny_ynet, tiny_transforcnn, tiny_enet])
def test_dropout_stays_usable_for_mc_dropout(build):
    torch.manual_seed(0)
    model, image = build(), torch.randn(32, 32).numpy()
    samples = [predict_slice(model, image, tile=32, overlap=0, dropout=True) for _ in "ab"]
    assert samples[0].shape == (3, 32, 32)
    assert not (samples[0] == samples[1]).all()


# ------------------------------------------------------------------------------ Y-Net


def test_ynet_maps_images_to_logits_and_gradients_reach_both_first_layers():
    model = tiny_ynet()
    assert _backward(model).shape == (2, 3, 32, 48)
    assert _has_gradient(model.regular.levels[0][0].weight)
    assert _has_gradient(model.dilated.stages[0][0][0].weight)


def test_ynet_has_the_three_modules_of_seed_002_at_their_widths():
    model = YNet(1, 2).eval()
    shapes = {}
    for name in ("dilated", "pyramid"):
        getattr(model, name).register_forward_hook(
            lambda _m, _i, out, name=name: shapes.__setitem__(name, tuple(out.shape[1:]))
        )
    with torch.no_grad():
        regular = [tuple(m.shape[1:]) for m in model.regular(torch.zeros(1, 1, 128, 128))]
        model(torch.zeros(1, 1, 128, 128))
    assert regular == [(24, 128, 128), (48, 64, 64), (96, 32, 32), (192, 16, 16), (384, 8, 8)]
    assert shapes["dilated"] == (16, 8, 8)
    assert shapes["pyramid"] == (16 * 4, 8, 8)  # the dilated map and its three pooled bins
    dilations = [m.dilation for m in model.dilated.modules() if isinstance(m, nn.Conv2d)]
    assert max(d[0] for d in dilations) > 1
    assert all(m.out_channels == 16 for m in model.dilated.modules() if isinstance(m, nn.Conv2d))


@pytest.mark.slow  # trains a network
def test_ynet_overfits_a_tiny_batch(overfit):
    assert overfit(lambda: YNet(1, 3, base=8, dilated_width=8), steps=100) > 0.95


# ------------------------------------------------------------------------- TransforCNN


def test_transforcnn_maps_images_to_logits_and_gradients_reach_the_embedding():
    model = tiny_transforcnn()
    assert _backward(model).shape == (2, 3, 32, 48)
    assert _has_gradient(model.embed.weight)


def test_transforcnn_fuses_every_second_of_8_blocks_of_64_d_tokens_into_the_decoder():
    model = TransforCNN(1, 2).eval()
    tokens, fed = [], {}
    for block in model.blocks:
        block.register_forward_hook(lambda _m, _i, out: tokens.append(out))
    for module in [model.stem, *model.lifts]:  # the decoder's entries for token maps
        module.register_forward_pre_hook(lambda m, inputs: fed.__setitem__(m, inputs[0]))
    with torch.no_grad():
        assert model(torch.randn(2, 1, 64, 96)).shape == (2, 2, 64, 96)
    assert len(tokens) == 8
    assert all(t.shape == (2, (64 // 16) * (96 // 16), 64) for t in tokens)
    entries = [fed[m] for m in [model.stem, *model.lifts]]
    expected = [tokens_to_map(tokens[k], 4, 6) for k in (7, 5, 3, 1)]  # blocks 8, 6, 4, 2
    assert all(torch.equal(f, e) for f, e in zip(entries, expected, strict=True))


def test_fourier_positions_depend_on_patch_coordinates_not_on_grid_size():
    torch.manual_seed(0)
    positions = FourierPositions(64, scale=2.0)
    small, large = positions(2, 3), positions(5, 7)
    assert small.shape == (6, 64)
    assert torch.allclose(small.reshape(2, 3, 64), large.reshape(5, 7, 64)[:2, :3])
    assert len(list(positions.parameters())) == 0


@pytest.mark.slow  # trains a network
def test_transforcnn_overfits_a_tiny_batch(overfit):
    assert overfit(lambda: TransforCNN(1, 3, dim=16, base=8)) > 0.95


# ------------------------------------------------------------------------------ E-Net


class FixedConfidence(nn.Module):
    """A two-class 'network' for images holding their labels: probability ``p`` on the
    true class everywhere.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        truth = images[:, 0].round().long()
        probs = torch.stack([truth == 0, truth == 1], dim=1) * (2 * self.p - 1) + (1 - self.p)
        return probs.log()


def test_enet_defaults_to_20_percent_unet_and_80_percent_transforcnn_in_the_state_dict():
    model = tiny_enet()
    assert [type(m) for m in model.members] == [UNet, TransforCNN]
    assert model.weights.tolist() == pytest.approx([0.2, 0.8])
    assert torch.equal(model.state_dict()["weights"], model.weights)


def test_enet_output_is_the_log_of_the_weighted_mean_of_member_probabilities():
    model = tiny_enet().eval()
    images = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        unet, transforcnn = (member(images).softmax(dim=1) for member in model.members)
        expected = (0.2 * unet + 0.8 * transforcnn).log()
        assert torch.allclose(model(images), expected, atol=1e-5)


def test_enet_trains_every_member_on_its_own_logits():
    model = tiny_enet()
    images, target = torch.randn(2, 1, 32, 32), torch.randint(0, 3, (2, 32, 32))
    torch.manual_seed(1)
    loss = compute_loss(model, images, target, None, cross_entropy)
    torch.manual_seed(1)  # the same dropout masks again
    with torch.no_grad():
        each = [cross_entropy(member(images), target) for member in model.members]
    assert loss.item() == pytest.approx(sum(each).item())
    loss.backward()
    assert _has_gradient(model.members[0].down[0][0].weight)
    assert _has_gradient(model.members[1].embed.weight)


def test_weight_grid_covers_the_simplex_in_tenths():
    assert len(weight_grid(2)) == 11
    assert len(weight_grid(3)) == 66
    assert all(sum(w) == pytest.approx(1) for w in weight_grid(3))


def test_tune_weights_puts_all_weight_on_the_member_right_where_the_other_is_sure_and_wrong():
    wrong, barely_right = FixedConfidence(0.001), FixedConfidence(0.55)
    model = ENet([wrong, barely_right], weights=[0.5, 0.5])
    labels = torch.randint(0, 2, (3, 16, 16), generator=torch.Generator().manual_seed(0))
    assert model.tune_weights(labels[:, None].float(), labels, batch_size=2) == [0.0, 1.0]
    assert model.weights.tolist() == [0.0, 1.0]
    assert torch.equal(model(labels[:, None].float()).argmax(dim=1), labels)


@pytest.mark.slow  # trains a network
def test_enet_overfits_a_tiny_batch(overfit):
    def build():
        return ENet.default(1, 3, unet={"base": 4, "depth": 2}, transforcnn={"dim": 16, "base": 8})

    assert overfit(build) > 0.95
