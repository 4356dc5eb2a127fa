"""Scoring slices for active learning: one uncertainty number per slice of a volume.

A method turns a network and a normalised (H, W) slice into an (H, W) uncertainty map and
the mean (C, H, W) probabilities; an aggregation (:data:`tomoloop.uncertainty.AGGREGATIONS`)
turns the map into the slice's score. Higher = more worth an expert's time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from tomoloop.errors import TomoloopError
from tomoloop.inference import normalise, predict_slice
from tomoloop.stacks import Stack, percentile_window
from tomoloop.uncertainty import (
    AGGREGATIONS,
    FLIPS,
    entropy,
    margin,
    mutual_information,
    tta_variance,
)

METHODS = ("entropy", "margin", "bald", "tta", "ensemble")


@dataclass(frozen=True)
class ScoreOptions:
    """How slices are scored: ``method`` (entropy, margin, bald = MC-dropout mutual
    information over ``passes`` samples, tta = flip test-time-augmentation variance,
    ensemble = disagreement (mutual information) of an ensemble's members, e.g. E-Net),
    ``aggregation`` (mean, top_percentile, foreground_weighted) and the tiling.
    """

    method: str = "entropy"
    aggregation: str = "mean"
    passes: int = 8
    tile: int = 128
    overlap: int = 32
    device: str | torch.device = "cpu"

    def __post_init__(self) -> None:
        if self.passes < 1:
            raise TomoloopError(f"passes {self.passes}: MC dropout needs at least 1 pass")
        if self.method not in METHODS:
            raise TomoloopError(f"unknown scoring method {self.method!r}: one of {METHODS}")
        if self.aggregation not in AGGREGATIONS:
            raise TomoloopError(
                f"unknown aggregation {self.aggregation!r}: one of {tuple(AGGREGATIONS)}"
            )

    @property
    def label(self) -> str:
        """How the registry names scores made this way, e.g. ``entropy/mean``."""
        return f"{self.method}/{self.aggregation}"


def _flipped_predictions(model: nn.Module, image: np.ndarray, o: ScoreOptions) -> np.ndarray:
    """(4, C, H, W): the four orthogonal flips of a slice predicted and flipped back.

    FLIPS name negative dims, so they address (H, W) of the image and of the
    probabilities alike.
    """
    samples = []
    for dims in FLIPS:
        flipped = np.ascontiguousarray(np.flip(image, dims)) if dims else image
        probs = predict_slice(model, flipped, o.tile, o.overlap, 8, o.device)
        samples.append(np.flip(probs, dims) if dims else probs)
    return np.stack(samples)


def uncertainty_map(
    model: nn.Module, image: np.ndarray, options: ScoreOptions
) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) uncertainty and (C, H, W) mean probabilities of one normalised slice."""
    o = options
    if o.method in ("entropy", "margin"):
        probs = predict_slice(model, image, o.tile, o.overlap, 8, o.device)
        return (entropy(probs) if o.method == "entropy" else margin(probs)), probs
    if o.method == "bald":
        samples = np.stack(
            [
                predict_slice(model, image, o.tile, o.overlap, 8, o.device, dropout=True)
                for _ in range(o.passes)
            ]
        )
        return mutual_information(samples), samples.mean(axis=0)
    if o.method == "ensemble":
        members = getattr(model, "members", None)
        if members is None:
            raise TomoloopError(
                "scoring method 'ensemble' needs an ensemble model (e.g. --arch enet)"
            )
        samples = np.stack(
            [predict_slice(m, image, o.tile, o.overlap, 8, o.device) for m in members]
        )
        return mutual_information(samples), samples.mean(axis=0)
    samples = _flipped_predictions(model, image, o)
    return tta_variance(samples), samples.mean(axis=0)


def slice_score(model: nn.Module, image: np.ndarray, options: ScoreOptions) -> float:
    """The aggregated uncertainty of one normalised (H, W) slice."""
    unsure, probs = uncertainty_map(model, image, options)
    return AGGREGATIONS[options.aggregation](unsure, probs)


def score_stack(
    model: nn.Module,
    stack: Stack,
    options: ScoreOptions,
    axis: str = "z",
    indices: list[int] | None = None,
    on_slice: Callable[[int], None] = lambda index: None,
) -> Iterator[tuple[int, float]]:
    """``(index, score)`` for the slices of a grayscale stack along ``axis``, streamed.

    Slices are normalised by the stack's percentile window, as in training.
    """
    window = percentile_window(stack)
    for index, image in stack.iter_slices(axis, indices):
        yield index, slice_score(model, normalise(image, window), options)
        on_slice(index)
