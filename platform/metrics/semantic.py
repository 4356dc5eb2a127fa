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


def best_and_lowest_accuracy(
    per_slice_accuracy: Sequence[float], k: int = 5
) -> tuple[float, float]:
    """Mean pixel accuracy of the k best and the k lowest slices (Tabassum et al. n.d.,
    App. Table II)."""
    ordered = np.sort(np.asarray(per_slice_accuracy, dtype=np.float64))
    if ordered.size == 0:
        return float("nan"), float("nan")
    k = min(k, ordered.size)
    return float(ordered[-k:].mean()), float(ordered[:k].mean())


def volume_fractions(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Fraction of the labelled pixels/voxels in each class, (n_classes,) summing to 1."""
    counts = np.bincount(labels.ravel().astype(np.int64), minlength=n_classes)[:n_classes]
    return counts / max(int(counts.sum()), 1)
