"""Judging a trained network on labelled slices: the scores of Tabassum et al. n.d. and
Quenum et al. 2023 (docs/references.md), k best and lowest slices, phase volume fractions against
the truth, and latency per patch.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from tomoloop.inference.predict import predict_slice, tile_origins
from tomoloop.labels.phases import IGNORE
from tomoloop.metrics.semantic import (
    BestAndLowest,
    SegmentationScores,
    best_and_lowest,
    confusion_matrix,
    patch_scores,
    scores,
)
from tomoloop.metrics.structure import tortuosity
from tomoloop.training.data import LabelledSlice


@dataclass(frozen=True)
class TortuosityCheck:
    """In-plane tortuosity (TauFactor, flux along x on each slice) of one class, predicted
    and true: means over the slices where both connect the two faces; ``lost`` counts the
    slices where the truth connects them and the prediction does not.
    """

    class_index: int
    predicted: float
    truth: float
    slices: int
    lost: int


@dataclass(frozen=True)
class Evaluation:
    """Scores over all slices together (one confusion matrix: pixels pooled over the split),
    the mIoU and mDSC of every (tile × tile) patch (``patches`` (P, 2), averaged per patch as
    Quenum et al. 2023 do), the k best/lowest slice pixel accuracies with their spread (k = 5,
    Tabassum et al. n.d., App. Table II), per-class volume fractions of truth and prediction,
    and mean seconds per (tile × tile) patch on the device used.
    """

    confusion: np.ndarray
    scores: SegmentationScores
    patches: np.ndarray
    extremes: BestAndLowest
    truth_fractions: np.ndarray
    predicted_fractions: np.ndarray
    seconds_per_patch: float
    tortuosity: TortuosityCheck | None = None

    def as_dict(self, class_names: Sequence[str]) -> dict:
        """Plain numbers keyed as the CLI's ``evaluate --json`` prints them."""
        s, e = self.scores, self.extremes
        per_patch = {
            f"{name}_per_patch{suffix}": float(reduce(self.patches[:, column]))
            if len(self.patches)
            else float("nan")
            for column, name in enumerate(("mIoU", "mDSC"))
            for suffix, reduce in (("", np.nanmean), ("_std", np.nanstd))
        }
        out = {
            "mIoU": s.miou,
            "mDSC": s.mdsc,
            **per_patch,
            "patches": len(self.patches),
            "fIU": s.fiu,
            "pixel_accuracy": s.pixel_accuracy,
            f"best{e.k}_accuracy": e.best,
            f"best{e.k}_accuracy_std": e.best_std,
            f"lowest{e.k}_accuracy": e.lowest,
            f"lowest{e.k}_accuracy_std": e.lowest_std,
            "best_lowest_overlap": e.overlap,
            "seconds_per_patch": self.seconds_per_patch,
            "per_class": {
                name: {
                    "iou": float(s.iou[c]),
                    "dice": float(s.dice[c]),
                    "volume_fraction": float(self.predicted_fractions[c]),
                    "volume_fraction_truth": float(self.truth_fractions[c]),
                }
                for c, name in enumerate(class_names)
            },
        }
        if self.tortuosity is not None:
            t = self.tortuosity
            out["tortuosity"] = {
                "class": class_names[t.class_index],
                "axis": "x",
                "predicted": t.predicted,
                "truth": t.truth,
                "slices": t.slices,
                "lost": t.lost,
            }
        return out


def evaluate(
    model: nn.Module,
    slices: Sequence[LabelledSlice],
    n_classes: int,
    tile: int = 128,
    overlap: int = 32,
    device: str | torch.device = "cpu",
    tortuosity_class: int | None = None,
) -> Evaluation:
    """Predict every slice (tiled, blended) and score the predictions against its labels;
    with ``tortuosity_class``, also compare that class's in-plane tortuosity
    (:class:`TortuosityCheck`). Only labelled pixels are scored: volume fractions are of
    the labelled pixels, a slice without any has no pixel accuracy, and tortuosity is
    compared on fully labelled slices only.
    """
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    truth_counts = np.zeros(n_classes)
    predicted_counts = np.zeros(n_classes)
    accuracies = []
    patches = []
    seconds = 0.0
    tiles = 0
    taus: list[tuple[float, float]] = []
    lost = 0
    for s in slices:
        start = time.perf_counter()
        predicted = predict_slice(model, s.image, tile, overlap, device=device).argmax(axis=0)
        seconds += time.perf_counter() - start
        tiles += _tiles_in(s.image.shape, tile, overlap)
        patches.append(patch_scores(s.labels, predicted, n_classes, tile))
        per_slice = confusion_matrix(s.labels, predicted, n_classes)
        confusion += per_slice
        if per_slice.sum():
            accuracies.append(np.trace(per_slice) / per_slice.sum())
        truth_counts += per_slice.sum(axis=1)
        predicted_counts += per_slice.sum(axis=0)
        if tortuosity_class is not None and not (s.labels == IGNORE).any():
            truth_tau = tortuosity((s.labels == tortuosity_class)[None], "x", device)
            if np.isfinite(truth_tau):
                tau = tortuosity((predicted == tortuosity_class)[None], "x", device)
                lost += not np.isfinite(tau)
                if np.isfinite(tau):
                    taus.append((tau, truth_tau))
    return Evaluation(
        confusion=confusion,
        scores=scores(confusion),
        patches=np.concatenate(patches) if patches else np.zeros((0, 2)),
        extremes=best_and_lowest(accuracies, k=5),
        truth_fractions=truth_counts / max(truth_counts.sum(), 1),
        predicted_fractions=predicted_counts / max(predicted_counts.sum(), 1),
        seconds_per_patch=seconds / max(tiles, 1),
        tortuosity=None
        if tortuosity_class is None
        else TortuosityCheck(
            tortuosity_class,
            float(np.mean([t[0] for t in taus])) if taus else float("nan"),
            float(np.mean([t[1] for t in taus])) if taus else float("nan"),
            len(taus),
            lost,
        ),
    )


def _tiles_in(shape: tuple[int, ...], tile: int, overlap: int) -> int:
    """How many tiles :func:`tomoloop.inference.predict_slice` runs for a slice."""
    h, w = (max(side, tile) for side in shape)
    return len(tile_origins(h, tile, overlap)) * len(tile_origins(w, tile, overlap))
