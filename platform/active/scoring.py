"""Scoring slices for active learning: one uncertainty number per slice of a volume.

A method turns a network and a normalised (H, W) slice into an (H, W) uncertainty map and
the mean (C, H, W) probabilities; an aggregation (:data:`tomoloop.inference.AGGREGATIONS`)
turns the map into the slice's score. Higher = more worth an expert's time.

Beside the score, a slice's :class:`SliceFeatures` carry what query strategies and the
lead-time model use: the predicted foreground and boundary fractions and, on request, the
encoder embedding (the deepest feature map, averaged over space).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from tomoloop.cores import fitting_threads
from tomoloop.errors import TomoloopError
from tomoloop.inference.predict import (
    mc_dropout_slice,
    normalise,
    predict_slice,
    predict_slices,
    tile_side,
)
from tomoloop.inference.uncertainty import (
    AGGREGATIONS,
    FLIPS,
    entropy,
    margin,
    mutual_information,
    tta_variance,
)
from tomoloop.stacks.stack import Stack, axis_named
from tomoloop.stacks.window import percentile_window

METHODS = ("entropy", "margin", "bald", "tta", "ensemble")
BATCH = 64  # tiles per forward pass; MC-dropout masks are drawn 8 tiles at a time regardless


@dataclass(frozen=True)
class ScoreOptions:
    """How slices are scored: ``method`` (entropy, margin, bald = MC-dropout mutual
    information over ``passes`` samples, tta = flip test-time-augmentation variance,
    ensemble = disagreement (mutual information) of an ensemble's members, e.g. E-Net),
    ``aggregation`` (mean, top_percentile, foreground_weighted), the tiling, and whether
    to compute encoder embeddings (``embed``, one more forward pass per slice).
    """

    method: str = "entropy"
    aggregation: str = "mean"
    passes: int = 8
    tile: int = 128
    overlap: int = 32
    device: str | torch.device = "cpu"
    embed: bool = False

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
    probabilities alike. The four flips' tiles share batches.
    """
    flipped = [np.ascontiguousarray(np.flip(image, dims)) if dims else image for dims in FLIPS]
    probs = predict_slices(model, flipped, o.tile, o.overlap, BATCH, o.device)
    return np.stack([np.flip(p, dims) if dims else p for p, dims in zip(probs, FLIPS, strict=True)])


def uncertainty_map(
    model: nn.Module, image: np.ndarray, options: ScoreOptions
) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) uncertainty and (C, H, W) mean probabilities of one normalised slice."""
    o = options
    if o.method in ("entropy", "margin"):
        probs = predict_slice(model, image, o.tile, o.overlap, BATCH, o.device)
        return (entropy(probs) if o.method == "entropy" else margin(probs)), probs
    if o.method == "bald":
        samples = mc_dropout_slice(
            model, image, o.passes, o.tile, o.overlap, chunk=8, batch=BATCH, device=o.device
        )
        return mutual_information(samples), samples.mean(axis=0)
    if o.method == "ensemble":
        members = getattr(model, "members", None)
        if members is None:
            raise TomoloopError(
                "scoring method 'ensemble' needs an ensemble model (e.g. --arch enet)"
            )
        samples = np.stack(
            [predict_slice(m, image, o.tile, o.overlap, BATCH, o.device) for m in members]
        )
        return mutual_information(samples), samples.mean(axis=0)
    samples = _flipped_predictions(model, image, o)
    return tta_variance(samples), samples.mean(axis=0)


@dataclass(frozen=True)
class SliceFeatures:
    """One slice as a query strategy sees it: ``score`` (aggregated uncertainty),
    ``foreground`` and ``boundary`` (fractions 0–1 of pixels predicted outside the first
    phase / on a phase boundary) and ``embedding`` (pooled encoder features, or None).
    """

    score: float
    foreground: float
    boundary: float
    embedding: tuple[float, ...] | None = None


def boundary_fraction(labels: np.ndarray) -> float:
    """Fraction of pixels of an (H, W) label image with a 4-neighbour of another label."""
    edge = np.zeros(labels.shape, dtype=bool)
    vertical = labels[1:] != labels[:-1]
    horizontal = labels[:, 1:] != labels[:, :-1]
    edge[1:] |= vertical
    edge[:-1] |= vertical
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    return float(edge.mean())


@torch.inference_mode()
def encoder_embedding(model: nn.Module, image: np.ndarray, options: ScoreOptions) -> np.ndarray:
    """(K,) float32: the network's deepest feature map on the slice's central tile, averaged
    over space and scaled to unit length.

    "Deepest" is the 4-D output of a leaf module with the fewest pixels (the last such
    one: the bottleneck's output), so this works for any of the architectures.
    """
    h, w = image.shape
    th, tw = tile_side(h, options.tile), tile_side(w, options.tile)
    y0, x0 = max((h - th) // 2, 0), max((w - tw) // 2, 0)
    crop = image[y0 : y0 + th, x0 : x0 + tw].astype(np.float32)
    crop = np.pad(crop, ((0, th - crop.shape[0]), (0, tw - crop.shape[1])), mode="edge")
    found: list[torch.Tensor] = []

    def keep(_module: nn.Module, _inputs: tuple, output: object) -> None:
        if not (isinstance(output, torch.Tensor) and output.ndim == 4):
            return
        if not found or output.shape[-2:].numel() <= found[0].shape[-2:].numel():
            found[:] = [output]

    leaves = [m for m in model.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(keep) for m in leaves]
    try:
        model.eval()
        model(torch.from_numpy(crop)[None, None].to(options.device))
    finally:
        for hook in hooks:
            hook.remove()
    vector = found[0].float().mean(dim=(0, 2, 3)).cpu().numpy()
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


def slice_features(model: nn.Module, image: np.ndarray, options: ScoreOptions) -> SliceFeatures:
    """The features of one normalised (H, W) slice."""
    unsure, probs = uncertainty_map(model, image, options)
    embedding = None
    if options.embed:
        embedding = tuple(float(v) for v in encoder_embedding(model, image, options))
    return features_of(unsure, probs, options, embedding)


def features_of(
    unsure: np.ndarray,
    probs: np.ndarray,
    options: ScoreOptions,
    embedding: tuple[float, ...] | None = None,
) -> SliceFeatures:
    """The features of a slice from its (H, W) uncertainty and (C, H, W) probabilities."""
    labels = probs.argmax(axis=0)
    return SliceFeatures(
        AGGREGATIONS[options.aggregation](unsure, probs),
        float((labels != 0).mean()),
        boundary_fraction(labels),
        embedding,
    )


def score_stack(
    model: nn.Module,
    stack: Stack,
    options: ScoreOptions,
    axis: str = "z",
    indices: list[int] | None = None,
    on_slice: Callable[[int], None] = lambda index: None,
) -> Iterator[tuple[int, SliceFeatures]]:
    """``(index, features)`` for the slices of a grayscale stack along ``axis``, streamed.

    Slices are normalised by the stack's percentile window, as in training; torch runs on as
    many CPU threads as cores stood idle when scoring began (:mod:`tomoloop.cores`).
    """
    window = percentile_window(stack)
    with fitting_threads():
        for index, image in stack.iter_slices(axis_named(axis), indices):
            yield index, slice_features(model, normalise(image, window), options)
            on_slice(index)
