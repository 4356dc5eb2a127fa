"""Judging a trained network on labelled slices: the scores of Tabassum et al. n.d. and
Quenum et al. 2023 (docs/references.md), k best and lowest slices, phase volume fractions against
the truth, and latency per patch.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

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


@dataclass
class _Tally:
    """What :func:`evaluate` adds up over the slices of one group (mutable while it runs)."""

    n_classes: int
    tortuosity_class: int | None
    confusion: np.ndarray = field(init=False)
    accuracies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    patches: int = 0
    patch_rows: list[np.ndarray] = field(default_factory=list)
    taus: list[tuple[float, float]] = field(default_factory=list)
    lost: int = 0

    def __post_init__(self) -> None:
        self.confusion = np.zeros((self.n_classes, self.n_classes), dtype=np.int64)

    def add(
        self,
        per_slice: np.ndarray,
        seconds: float,
        patches: int,
        scored: np.ndarray,
        tau: tuple[float, float] | None,
    ) -> None:
        """One slice: its (n, n) confusion, prediction time and patches, its patches'
        (P, 2) mIoU and mDSC, and its (predicted, true) tortuosity — (nan, τ) when the
        prediction lost the connection, None when not compared."""
        self.confusion += per_slice
        self.patch_rows.append(scored)
        if per_slice.sum():
            self.accuracies.append(float(np.trace(per_slice) / per_slice.sum()))
        self.seconds += seconds
        self.patches += patches
        if tau is not None and np.isfinite(tau[0]):
            self.taus.append(tau)
        elif tau is not None:
            self.lost += 1

    def result(self) -> Evaluation:
        truth_counts = self.confusion.sum(axis=1).astype(np.float64)
        predicted_counts = self.confusion.sum(axis=0).astype(np.float64)
        taus = self.taus
        return Evaluation(
            confusion=self.confusion,
            scores=scores(self.confusion),
            patches=np.concatenate(self.patch_rows) if self.patch_rows else np.zeros((0, 2)),
            extremes=best_and_lowest(self.accuracies, k=5),
            truth_fractions=truth_counts / max(truth_counts.sum(), 1),
            predicted_fractions=predicted_counts / max(predicted_counts.sum(), 1),
            seconds_per_patch=self.seconds / max(self.patches, 1),
            tortuosity=None
            if self.tortuosity_class is None
            else TortuosityCheck(
                self.tortuosity_class,
                float(np.mean([t[0] for t in taus])) if taus else float("nan"),
                float(np.mean([t[1] for t in taus])) if taus else float("nan"),
                len(taus),
                self.lost,
            ),
        )


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
    groups = [""] * len(slices)
    pooled, _ = evaluate_groups(
        model, slices, groups, n_classes, tile, overlap, device, tortuosity_class
    )
    return pooled


def evaluate_groups(
    model: nn.Module,
    slices: Sequence[LabelledSlice],
    groups: Sequence[str],
    n_classes: int,
    tile: int = 128,
    overlap: int = 32,
    device: str | torch.device = "cpu",
    tortuosity_class: int | None = None,
) -> tuple[Evaluation, dict[str, Evaluation]]:
    """:func:`evaluate` over all slices together and over each group of them (``groups[k]``
    names slice k's group, e.g. its volume), every slice predicted once: (pooled, {group:
    evaluation}). A group's scores are those :func:`evaluate` gives its slices alone."""
    if len(groups) != len(slices):
        raise ValueError(f"{len(groups)} group names for {len(slices)} slices")
    pooled = _Tally(n_classes, tortuosity_class)
    tallies = {g: _Tally(n_classes, tortuosity_class) for g in groups}
    for s, group in zip(slices, groups, strict=True):
        start = time.perf_counter()
        predicted = predict_slice(model, s.image, tile, overlap, device=device).argmax(axis=0)
        seconds = time.perf_counter() - start
        per_slice = confusion_matrix(s.labels, predicted, n_classes)
        tau = _tortuosity_pair(s.labels, predicted, tortuosity_class, device)
        patches = _tiles_in(s.image.shape, tile, overlap)
        scored = patch_scores(s.labels, predicted, n_classes, tile)
        for tally in (pooled, tallies[group]):
            tally.add(per_slice, seconds, patches, scored, tau)
    return pooled.result(), {g: t.result() for g, t in tallies.items()}


def _tortuosity_pair(
    labels: np.ndarray,
    predicted: np.ndarray,
    class_index: int | None,
    device: str | torch.device,
) -> tuple[float, float] | None:
    """(predicted, true) in-plane tortuosity of ``class_index`` on one fully labelled slice
    whose truth connects the two faces (predicted nan: the prediction does not); None when
    not compared."""
    if class_index is None or (labels == IGNORE).any():
        return None
    truth_tau = tortuosity((labels == class_index)[None], "x", device)
    if not np.isfinite(truth_tau):
        return None
    return tortuosity((predicted == class_index)[None], "x", device), truth_tau


def _tiles_in(shape: tuple[int, ...], tile: int, overlap: int) -> int:
    """How many tiles :func:`tomoloop.inference.predict_slice` runs for a slice."""
    h, w = (max(side, tile) for side in shape)
    return len(tile_origins(h, tile, overlap)) * len(tile_origins(w, tile, overlap))
