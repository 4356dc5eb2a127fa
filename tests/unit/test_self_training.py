import numpy as np
import pytest

from tomoloop.active.self_training import SelfTraining, class_thresholds, confident_labels
from tomoloop.errors import TomoloopError
from tomoloop.labels.phases import IGNORE
from tomoloop.training.data import DEFAULT_TIER_WEIGHTS


def _probs(top: np.ndarray, classes: np.ndarray, n: int = 3) -> np.ndarray:
    """(n, H, W) probabilities with ``top`` on ``classes`` and the rest shared evenly."""
    out = np.repeat(((1 - top) / (n - 1))[None], n, axis=0)
    np.put_along_axis(out, classes[None], top[None], axis=0)
    return out


def test_only_pixels_above_their_class_threshold_become_labels():
    top = np.array([[0.99, 0.95, 0.6], [0.97, 0.5, 0.99]])
    classes = np.array([[0, 0, 1], [2, 1, 1]])
    label = confident_labels(_probs(top, classes), np.array([0.96, 0.9, 0.9]))
    assert label.dtype == np.uint8
    assert label.tolist() == [[0, IGNORE, IGNORE], [2, IGNORE, 1]]


def test_labelled_pixels_are_left_to_the_person():
    top, classes = np.full((2, 2), 0.99), np.zeros((2, 2), int)
    painted = np.array([[True, False], [False, False]])
    label = confident_labels(_probs(top, classes), np.full(3, 0.5), painted)
    assert label.tolist() == [[IGNORE, 0], [0, 0]]


def test_thresholds_keep_the_most_confident_share_of_each_class_above_the_floor():
    rng = np.random.default_rng(0)
    classes = rng.integers(0, 3, (40, 40))
    classes[classes == 2] = 0  # class 2 is never predicted
    top = rng.uniform(0.5, 1.0, (40, 40))
    top[classes == 1] = rng.uniform(0.95, 1.0, int((classes == 1).sum()))
    probs = _probs(top, classes)
    thresholds = class_thresholds(probs, keep=0.25, floor=0.8)
    assert thresholds[0] == pytest.approx(np.quantile(top[classes == 0], 0.75))
    assert thresholds[1] == pytest.approx(np.quantile(top[classes == 1], 0.75))
    assert thresholds[2] > 1
    floored = class_thresholds(probs, keep=0.25, floor=0.9)
    assert floored[0] == 0.9 and floored[1] == thresholds[1]
    label = confident_labels(probs, thresholds)
    kept = (label == 0).sum() / (classes == 0).sum()
    assert kept == pytest.approx(0.25, abs=0.01)
    assert not (label == 2).any()


def test_a_rare_class_keeps_its_share_where_one_threshold_would_drop_it():
    classes = np.zeros((10, 10), int)
    classes[0, :4] = 2
    top = np.full((10, 10), 0.99)
    top[0, :4] = [0.7, 0.75, 0.8, 0.85]
    thresholds = class_thresholds(_probs(top, classes), keep=0.5, floor=0.6)
    label = confident_labels(_probs(top, classes), thresholds)
    assert label[0, :4].tolist() == [IGNORE, IGNORE, 2, 2]


def test_the_switch_defaults_off_with_the_model_tier_weight():
    settings = SelfTraining()
    assert not settings.enabled and settings.weight == DEFAULT_TIER_WEIGHTS["model"]
    assert settings.weight < DEFAULT_TIER_WEIGHTS["annotator"]
    for bad in ({"keep": 0.0}, {"keep": 1.5}, {"floor": -0.1}, {"weight": -1.0}):
        with pytest.raises(TomoloopError):
            SelfTraining(**bad)
