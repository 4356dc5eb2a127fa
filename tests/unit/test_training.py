from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import toy_batch

from tomoloop.networks.registry import build_model
from tomoloop.training.data import NO_AUGMENTATION, DatasetError, LabelledSlice
from tomoloop.training.trainer import (
    CHECKPOINT,
    TrainConfig,
    TrainingError,
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
def test_a_crashed_run_resumes_exactly_where_it_stopped(tmp_path):
    whole = _model()
    reference = train(whole, _slices(0), _slices(1), 3, CONFIG, tmp_path / "a")

    def crash_after_second_epoch(record):
        if record.epoch == 2:
            raise Crash

    with pytest.raises(Crash):
        train(
            _model(),
            _slices(0),
            _slices(1),
            3,
            CONFIG,
            tmp_path / "b",
            "cpu",
            crash_after_second_epoch,
        )
    resumed_model = _model()
    resumed = train(resumed_model, _slices(0), _slices(1), 3, CONFIG, tmp_path / "b")
    assert resumed.resumed_after == 2
    assert resumed.history == [
        replace(r, seconds=s.seconds)
        for r, s in zip(reference.history, resumed.history, strict=True)
    ]
    for key, value in whole.state_dict().items():
        assert torch.equal(value, resumed_model.state_dict()[key]), key


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
