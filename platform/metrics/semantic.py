"""Semantic-segmentation metrics (Tabassum et al. n.d., App. §II, Measure of
Success; Quenum et al. 2023, eqs. 5–6 and Table 1; docs/references.md).

All functions take integer class-index arrays of one shape (any number of dimensions) and
a class count; class c counts pixels whose value is c, and unlabelled pixels
(:data:`tomoloop.labels.IGNORE`) count nowhere. Per-class values are NaN where a
class is absent from both truth and prediction (its score is undefined, and means skip it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tomoloop.labels.phases import IGNORE


def confusion_matrix(truth: np.ndarray, prediction: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) int64 counts: row = true class, column = predicted class.
    Pixels that are :data:`IGNORE` (unlabelled) in either array count in no cell.
    """
    if truth.shape != prediction.shape:
        raise ValueError(f"truth {truth.shape} and prediction {prediction.shape} differ")
    t = truth.ravel().astype(np.int64)
    p = prediction.ravel().astype(np.int64)
    labelled = (t != IGNORE) & (p != IGNORE)
    if not labelled.all():
        t, p = t[labelled], p[labelled]
    if t.size and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= n_classes):
        raise ValueError(f"class indices must lie in 0..{n_classes - 1}")
    return np.bincount(t * n_classes + p, minlength=n_classes**2).reshape(n_classes, n_classes)


@dataclass(frozen=True)
class SegmentationScores:
    """Scores from one confusion matrix. Per-class arrays have one value per class.

    iou: TP / (TP + FP + FN) per class (Long et al.'s IU; Tabassum et al. n.d.'s mIU terms;
        Quenum et al. 2023, eq. 6).
    dice: 2 TP / (2 TP + FP + FN) per class — the per-class F1 score (Tabassum et al. n.d.) and
        Dice similarity coefficient (Quenum et al. 2023, eq. 5).
    miou, mdsc: means of iou / dice over the classes where they are defined.
    fiu: frequency-weighted IU, (1/t) Σ_c t_c IU_c (Tabassum et al. n.d., App. §II).
    pixel_accuracy: correctly classified pixels / all pixels.
    """

    iou: np.ndarray
    dice: np.ndarray
    miou: float
    mdsc: float
    fiu: float
    pixel_accuracy: float


def scores(confusion: np.ndarray) -> SegmentationScores:
    """All per-class and mean scores of a confusion matrix (rows truth, columns prediction)."""
    confusion = confusion.astype(np.float64)
    tp = np.diag(confusion)
    truth_total = confusion.sum(axis=1)
    predicted_total = confusion.sum(axis=0)
    union = truth_total + predicted_total - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        dice = np.where(union > 0, 2 * tp / (truth_total + predicted_total), np.nan)
    total = confusion.sum()
    return SegmentationScores(
        iou=iou,
        dice=dice,
        miou=float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
        mdsc=float(np.nanmean(dice)) if np.isfinite(dice).any() else float("nan"),
        fiu=float(np.nansum(truth_total * iou) / total) if total else float("nan"),
        pixel_accuracy=float(tp.sum() / total) if total else float("nan"),
    )


@dataclass(frozen=True)
class BestAndLowest:
    """Mean and spread (population standard deviation) of the k best and the k lowest
    per-slice pixel accuracies (Tabassum et al. n.d., App. Table II: "Best 5", "Lowest 5",
    mean ± spread). ``overlap``: fewer than 2k slices, so some slices are in both groups.
    """

    k: int
    best: float
    best_std: float
    lowest: float
    lowest_std: float
    overlap: bool


def best_and_lowest(per_slice_accuracy: Sequence[float], k: int = 5) -> BestAndLowest:
    """The k best and k lowest of the per-slice accuracies (all of them when fewer than k),
    each group's mean and standard deviation; NaN without any slice."""
    ordered = np.sort(np.asarray(per_slice_accuracy, dtype=np.float64))
    if ordered.size == 0:
        nan = float("nan")
        return BestAndLowest(k, nan, nan, nan, nan, overlap=False)
    best, lowest = ordered[-k:], ordered[:k]
    return BestAndLowest(
        k,
        float(best.mean()),
        float(best.std()),
        float(lowest.mean()),
        float(lowest.std()),
        overlap=ordered.size < 2 * k,
    )


def patch_scores(
    truth: np.ndarray, prediction: np.ndarray, n_classes: int, side: int
) -> np.ndarray:
    """mIoU and mDSC of every ``side`` × ``side`` patch of a slice, as Quenum et al. 2023
    (§3, Table 1) average their scores over 128² test patches: truth and prediction (H, W)
    integer → (P, 2) float64, one row (mIoU, mDSC) per patch with a labelled pixel. Patches
    tile the slice from its top-left corner without overlap; those at the right and bottom
    edges keep what is left (smaller), and a slice smaller than ``side`` is one patch.
    """
    rows = []
    for top in range(0, truth.shape[0], side):
        for left in range(0, truth.shape[1], side):
            window = np.s_[top : top + side, left : left + side]
            confusion = confusion_matrix(truth[window], prediction[window], n_classes)
            if confusion.sum():
                patch = scores(confusion)
                rows.append((patch.miou, patch.mdsc))
    return np.array(rows, dtype=np.float64).reshape(-1, 2)


def volume_fractions(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Fraction of the labelled pixels/voxels in each class, (n_classes,) summing to 1."""
    counts = np.bincount(labels.ravel().astype(np.int64), minlength=n_classes)[:n_classes]
    return counts / max(int(counts.sum()), 1)
