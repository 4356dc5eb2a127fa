from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import toy_batch
from hypothesis import given
from hypothesis import strategies as st

from tomoloop.labels.phases import IGNORE
from tomoloop.networks.registry import build_model
from tomoloop.training.averaging import average_decay, update_average
from tomoloop.training.data import NO_AUGMENTATION, DatasetError, LabelledSlice
from tomoloop.training.trainer import (
    CHECKPOINT,
    TrainConfig,
    TrainingError,
    balanced_class_weights,
    class_weights,
    plot_learning_curve,
    resolve_device,
    train,
)

CONFIG = TrainConfig(
    epochs=3, patch=32, batch=4, patches_per_epoch=16, lr=3e-3, patience=0, overlap=8
)


def _slices(seed, n=3):
    images, labels = toy_batch(seed=seed, n=n, side=48)
    return [
        LabelledSlice(np.clip(image[0].numpy(), 0, 1), label.numpy().astype(np.uint8))
        for image, label in zip(images, labels, strict=True)
    ]


def _model():
    torch.manual_seed(0)
    return build_model("unet", 1, 3, base=8, depth=2)


class Crash(RuntimeError):
    pass


@pytest.mark.slow  # trains a network
def test_training_learns_and_keeps_the_best_epoch(tmp_path):
    model = _model()
    config = replace(CONFIG, epochs=12, patches_per_epoch=64)
    result = train(model, _slices(0), _slices(1), 3, config, tmp_path, device="cpu")
    assert [r.epoch for r in result.history] == list(range(1, 13))
    assert result.best_miou == max(r.val_miou for r in result.history)
    assert result.best_miou > 0.8  # one class everywhere scores < 0.3 here
    assert (tmp_path / CHECKPOINT).exists()


@pytest.mark.slow  # trains a network
@pytest.mark.parametrize("average", [0.0, 0.9])
def test_a_crashed_run_resumes_exactly_where_it_stopped(tmp_path, average):
    config = replace(CONFIG, average=average)
    whole = _model()
    reference = train(whole, _slices(0), _slices(1), 3, config, tmp_path / "a")

    def crash_after_second_epoch(record):
        if record.epoch == 2:
            raise Crash

    with pytest.raises(Crash):
        train(
            _model(),
            _slices(0),
            _slices(1),
            3,
            config,
            tmp_path / "b",
            "cpu",
            crash_after_second_epoch,
        )
    resumed_model = _model()
    resumed = train(resumed_model, _slices(0), _slices(1), 3, config, tmp_path / "b")
    assert resumed.resumed_after == 2
    assert resumed.history == [
        replace(r, seconds=s.seconds)
        for r, s in zip(reference.history, resumed.history, strict=True)
    ]
    for key, value in whole.state_dict().items():
        assert torch.equal(value, resumed_model.state_dict()[key]), key


def test_the_average_moves_by_one_minus_the_decay_and_copies_counts():
    average, live = _model(), build_model("unet", 1, 3, base=8, depth=2)
    before = {k: v.clone() for k, v in average.state_dict().items()}
    update_average(average, live, 0.75)
    for key, value in average.state_dict().items():
        expected = live.state_dict()[key]
        if value.dtype.is_floating_point:
            expected = 0.75 * before[key] + 0.25 * expected
        assert torch.allclose(value, expected, atol=1e-7), key


@pytest.mark.slow  # trains a network
def test_with_an_average_the_run_ends_with_the_average_of_the_steps_weights(tmp_path):
    live, averaged = _model(), _model()
    seen = []  # the weights each training forward sees: before steps 0, 1, 2, 3

    def record(module, _):
        if module.training:
            seen.append({k: v.clone() for k, v in module.state_dict().items()})

    live.register_forward_pre_hook(record)
    config = replace(CONFIG, epochs=1)  # four steps, one epoch: the one kept
    train(live, _slices(0), _slices(1), 3, config, tmp_path / "a")
    seen.append(live.state_dict())  # after step 3
    train(averaged, _slices(0), _slices(1), 3, replace(config, average=0.2), tmp_path / "b")
    expected = dict(seen[0])
    for step, weights in enumerate(seen[1:]):
        decay = average_decay(0.2, step)
        expected = {
            k: v.lerp(weights[k], 1 - decay) if v.dtype.is_floating_point else weights[k]
            for k, v in expected.items()
        }
    assert [average_decay(0.2, s) for s in range(4)] == [0.1, 2 / 11, 0.2, 0.2]
    for key, value in averaged.state_dict().items():
        assert torch.allclose(value, expected[key], atol=1e-6), key
    assert not torch.allclose(averaged.state_dict()["down.0.0.weight"], seen[-1]["down.0.0.weight"])


@pytest.mark.slow  # trains a network
def test_early_stopping_when_validation_does_not_improve(tmp_path):
    config = replace(CONFIG, epochs=6, lr=0.0, weight_decay=0.0, patience=2)
    result = train(_model(), _slices(0), _slices(1), 3, config, tmp_path)
    assert result.stopped_early
    assert [r.epoch for r in result.history] == [1, 2, 3]
    assert result.best_epoch == 1


@pytest.mark.slow  # trains a network
def test_a_checkpoint_of_another_configuration_is_refused(tmp_path):
    train(_model(), _slices(0), _slices(1), 3, replace(CONFIG, epochs=1), tmp_path)
    with pytest.raises(TrainingError, match="another configuration"):
        train(_model(), _slices(0), _slices(1), 3, replace(CONFIG, epochs=1, lr=1e-4), tmp_path)


def test_bad_inputs_are_refused_with_clear_errors(tmp_path):
    good = _slices(0)
    nan = [LabelledSlice(np.full((32, 32), np.nan, np.float32), np.zeros((32, 32), np.uint8))]
    with pytest.raises(DatasetError, match="val split is empty"):
        train(_model(), good, [], 3, CONFIG, tmp_path)
    with pytest.raises(DatasetError, match="NaN"):
        train(_model(), nan, good, 3, CONFIG, tmp_path)
    with pytest.raises(DatasetError, match="2 classes"):
        train(build_model("unet", 1, 2, base=4, depth=2), good, good, 2, CONFIG, tmp_path)
    with pytest.raises(TrainingError, match="3 input channels"):
        train(build_model("unet", 3, 3, base=4, depth=2), good, good, 3, CONFIG, tmp_path)


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(TrainingError, match="unknown device"):
        resolve_device("tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(TrainingError, match="no CUDA GPU"):
            resolve_device("cuda")


@pytest.mark.slow  # trains a network
def test_learning_curve_png(tmp_path):
    config = replace(CONFIG, epochs=2, augmentation=NO_AUGMENTATION)
    result = train(_model(), _slices(0), _slices(1), 3, config, tmp_path)
    path = plot_learning_curve(result.history, tmp_path / "curve.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_out_of_range_settings_are_refused_before_any_work():
    with pytest.raises(TrainingError, match=r"batch 0 must be ≥ 1; patch 40 must be a multiple"):
        TrainConfig(batch=0, patch=40)
    with pytest.raises(TrainingError) as refused:  # the patch alone: the overlap fits 16 on
        TrainConfig(patch=0, overlap=0)
    assert str(refused.value) == "patch 0 must be a multiple of 16 from 16 on (16, 32, 64, …)"
    with pytest.raises(TrainingError, match=r"^overlap 32 must be ≥ 0 and below the patch$"):
        TrainConfig(patch=32, overlap=32)
    with pytest.raises(TrainingError, match=r"^average -0.5 must be ≥ 0 and below 1$"):
        TrainConfig(average=-0.5)


@given(st.lists(st.integers(0, 10**6), min_size=1, max_size=6))
def test_balanced_class_weights_give_every_present_class_the_same_total_weight(counts):
    weights = balanced_class_weights(np.array(counts))
    present = [c for c in counts if c]
    totals = [w * c for w, c in zip(weights, counts, strict=True) if c]
    assert totals == pytest.approx([sum(present) / max(len(present), 1)] * len(present))
    assert all(w == 0 for w, c in zip(weights, counts, strict=True) if not c)


def test_class_weights_are_read_from_the_option_or_the_labelled_pixels():
    labels = np.array([[0, 0, 0, 1], [0, 0, 0, 1], [IGNORE] * 4], np.uint8)
    slices = [LabelledSlice(np.zeros(labels.shape, np.float32), labels)]
    assert class_weights("", slices, 3) is None
    assert class_weights("balanced", slices, 3).tolist() == [8 / 12, 8 / 4, 0]
    assert class_weights("1,2.5,0", slices, 3).tolist() == [1, 2.5, 0]
    with pytest.raises(TrainingError, match="3 numbers ≥ 0, one per class in phase order"):
        class_weights("1,2", slices, 3)
    with pytest.raises(TrainingError, match="class_weights 'heavy' must be 'balanced'"):
        TrainConfig(class_weights="heavy")
    with pytest.raises(TrainingError, match="needs --loss ce or bce"):
        TrainConfig(class_weights="balanced", loss="dice")


def test_class_weights_reach_the_loss_and_ones_change_nothing(tmp_path):
    config = replace(CONFIG, epochs=1, augmentation=NO_AUGMENTATION)

    def trained(weights, folder):
        model = _model()
        train(model, _slices(0), _slices(1), 3, replace(config, class_weights=weights), folder)
        return model.state_dict()["head.weight"]

    plain = trained("", tmp_path / "a")
    assert torch.equal(trained("1,1,1", tmp_path / "b"), plain)
    assert not torch.equal(trained("1,1,8", tmp_path / "c"), plain)


def test_the_seed_recipe_sets_the_published_settings_and_given_options_win():
    from tomoloop.errors import TomoloopError
    from tomoloop.networks.registry import MODELS
    from tomoloop.training.recipes import apply_recipe

    config, options = apply_recipe("seed", "matphase", {"epochs": 115}, {"base": 8})
    assert config == {
        "loss": "ce", "class_weights": "balanced", "row_removal": 10, "patience": 0,
        "epochs": 115,
    }  # fmt: skip
    assert options == {"schedule": "two_stage", "ugsm_share": 100 / 115, "base": 8}
    TrainConfig(**config)
    assert apply_recipe("seed", "lrcsnet", {}, {"kernel": 3})[1] == {"base": 80, "kernel": 3}
    assert apply_recipe("default", "matphase", {"loss": "dice"}, {}) == ({"loss": "dice"}, {})
    for arch in MODELS:  # every network has a published recipe that builds
        config, options = apply_recipe("seed", arch, {}, {})
        TrainConfig(**config)
        build_model(arch, 1, 3, **options)
    with pytest.raises(TomoloopError, match="unknown recipe 'paper': choose one of default, seed"):
        apply_recipe("paper", "unet", {}, {})
