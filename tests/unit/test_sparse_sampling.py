"""Sparse labels in patch sampling, metrics and evaluation, and a tiny training on
half-labelled slices.
"""

from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import toy_batch

from tomoloop.labels.phases import IGNORE
from tomoloop.metrics.semantic import confusion_matrix, volume_fractions
from tomoloop.networks.registry import build_model
from tomoloop.training.data import (
    NO_AUGMENTATION,
    Augmentation,
    DatasetError,
    LabelledSlice,
    sample_patches,
)
from tomoloop.training.evaluation import evaluate
from tomoloop.training.trainer import TrainConfig, train


def _strip(side=64, labelled_columns=8, seed=0):
    """A slice of classes 0..2 whose first ``labelled_columns`` columns only are labelled."""
    rng = np.random.default_rng(seed)
    labels = np.full((side, side), IGNORE, np.uint8)
    labels[:, :labelled_columns] = rng.integers(0, 3, (side, labelled_columns))
    return LabelledSlice(rng.random((side, side), dtype=np.float32), labels)


@pytest.mark.parametrize("balanced", [False, True], ids=["random", "class-balanced"])
@pytest.mark.parametrize("aug", [NO_AUGMENTATION, Augmentation()], ids=["plain", "augmented"])
def test_patches_are_centred_on_labelled_pixels_and_keep_the_ignore(balanced, aug):
    rng = np.random.default_rng(0)
    _, labels, weights = sample_patches([_strip()], 60, 16, rng, 3, balanced, aug)
    labelled = labels != IGNORE
    assert labelled.flatten(1).any(dim=1).all()  # no patch is all unlabelled
    assert set(torch.unique(labels).tolist()) <= {0, 1, 2, IGNORE}
    assert (~labelled).any()  # unlabelled pixels stay unlabelled, not class 0
    assert torch.equal(weights, torch.ones_like(weights))


def test_a_fully_labelled_slice_is_sampled_exactly_as_before_sparse_labels():
    """Same seed → the same patches as the reference draws of the dense sampler."""
    s = _strip(labelled_columns=64)
    images, _, _ = sample_patches([s], 3, 16, np.random.default_rng(5), 3)
    rng = np.random.default_rng(5)
    for n in range(3):
        rng.integers(1)  # the slice drawn
        y, x = int(rng.integers(64 - 16 + 1)), int(rng.integers(64 - 16 + 1))
        np.testing.assert_array_equal(images[n, 0].numpy(), s.image[y : y + 16, x : x + 16])


@pytest.mark.parametrize("balanced", [False, True], ids=["random", "class-balanced"])
def test_a_patch_of_a_slice_without_labels_is_refused(balanced):
    empty = LabelledSlice(np.zeros((32, 32), np.float32), np.full((32, 32), IGNORE, np.uint8))
    with pytest.raises(DatasetError, match="without a labelled pixel"):
        sample_patches([empty], 1, 16, np.random.default_rng(0), 3, balanced)


def test_unlabelled_pixels_count_in_no_confusion_cell():
    truth = np.array([[0, 1, IGNORE], [2, IGNORE, 1]], np.uint8)
    prediction = np.array([[0, 2, 1], [2, 0, 1]], np.uint8)
    confusion = confusion_matrix(truth, prediction, 3)
    assert confusion.sum() == 4
    np.testing.assert_array_equal(confusion, [[1, 0, 0], [0, 1, 1], [0, 0, 1]])
    np.testing.assert_allclose(volume_fractions(truth, 3), [0.25, 0.5, 0.25])


class _Constant(torch.nn.Module):
    """Predicts class 1 everywhere."""

    def forward(self, x):
        logits = torch.zeros(x.shape[0], 3, *x.shape[2:])
        logits[:, 1] = 1.0
        return logits


def test_evaluation_scores_labelled_pixels_only():
    labels = np.full((32, 32), IGNORE, np.uint8)
    labels[:8] = 1
    labels[8:12] = 0
    empty = np.full((32, 32), IGNORE, np.uint8)
    image = np.zeros((32, 32), np.float32)
    slices = [LabelledSlice(image, labels), LabelledSlice(image, empty)]
    result = evaluate(_Constant(), slices, 3, tile=32, overlap=0)
    assert result.confusion.sum() == 12 * 32
    assert result.scores.pixel_accuracy == pytest.approx(8 / 12)
    assert result.extremes.best == pytest.approx(8 / 12)  # the empty slice has no accuracy
    assert len(result.patches) == 1  # nor any scored patch
    np.testing.assert_allclose(result.truth_fractions, [1 / 3, 2 / 3, 0])


def test_evaluation_reports_pooled_and_per_patch_scores_and_best_lowest_spread():
    image = np.zeros((32, 32), np.float32)
    right = np.ones((32, 32), np.uint8)  # class 1: the constant model is right
    half = right.copy()
    half[:16, :16] = 0  # one 16² patch of four all wrong
    result = evaluate(
        _Constant(), [LabelledSlice(image, right), LabelledSlice(image, half)], 3, 16, 0
    )
    scores = result.as_dict(("pore", "nmc", "cbd"))
    assert scores["patches"] == 8
    assert scores["mIoU_per_patch"] == pytest.approx(7 / 8)  # one patch scores 0, seven 1
    assert scores["mIoU_per_patch_std"] == pytest.approx(np.std([0] + [1] * 7))
    assert scores["mIoU"] == pytest.approx((0 + 1792 / 2048) / 2)  # pooled over the split
    assert (scores["best5_accuracy"], scores["lowest5_accuracy"]) == (0.875, 0.875)
    assert scores["best5_accuracy_std"] == pytest.approx(0.125)
    assert scores["best_lowest_overlap"] is True  # 2 slices < 10: the groups share them


def _half_labelled(seed):
    images, labels = toy_batch(seed=seed, n=3, side=48)
    out = []
    for image, label in zip(images, labels, strict=True):
        sparse = label.numpy().astype(np.uint8)
        sparse[:, 24:] = IGNORE
        out.append(LabelledSlice(np.clip(image[0].numpy(), 0, 1), sparse))
    out.append(replace(out[0], labels=np.full((48, 48), IGNORE, np.uint8)))
    return out


@pytest.mark.slow
def test_a_tiny_training_on_half_labelled_slices_learns(tmp_path):
    torch.manual_seed(0)
    model = build_model("unet", 1, 3, base=8, depth=2)
    config = TrainConfig(
        epochs=12, patch=32, batch=4, patches_per_epoch=64, lr=3e-3, patience=0, overlap=8
    )
    result = train(model, _half_labelled(0), _half_labelled(1), 3, config, tmp_path)
    assert result.best_miou > 0.8  # one class everywhere scores < 0.3 on the labelled half
    test = evaluate(model, _half_labelled(2), 3, tile=32, overlap=8)
    assert test.confusion.sum() == 3 * 48 * 24
    assert test.scores.miou > 0.8
