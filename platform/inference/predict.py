"""Prediction on slices and whole volumes: tiled with overlap and blended, streamed to disk.

A slice larger than the network's tile is cut into overlapping tiles; each tile's
probabilities are weighted by a window that falls to almost zero at its edges, so every
pixel is decided mostly by tiles that see it with full context and no seams appear.
Volumes are predicted slice by slice and written as they go (labels uint8/uint16 TIFF,
per-voxel uncertainty float16 TIFF), so they need not fit in memory.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
import torch
from torch import nn

from tomoloop.inference.uncertainty import enable_dropout, entropy
from tomoloop.networks.layers import SIDE_MULTIPLE
from tomoloop.outputs import temp_file_beside, writing
from tomoloop.stacks.tiff import Stack, Window, axis_named, percentile_window


def blend_window(height: int, width: int | None = None) -> np.ndarray:
    """(height, width) float32 weights (square if no width): a raised cosine, ≈1 in the
    middle, small at the edges.
    """

    def ramp(n: int) -> np.ndarray:
        return np.sin(np.pi * (np.arange(n) + 0.5) / n) ** 2

    return np.outer(ramp(height), ramp(width or height)).astype(np.float32) + 1e-6


def tile_side(length: int, tile: int) -> int:
    """The tile side used along an image side of ``length``: ``tile``, or less for a short
    side (its length rounded up to a multiple of 16) — no work on padding.
    """
    return min(tile, -(-length // SIDE_MULTIPLE) * SIDE_MULTIPLE)


def tile_origins(length: int, tile: int, overlap: int) -> list[int]:
    """Start positions covering 0..length with tiles of ``tile`` overlapping by ≥ overlap."""
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap {overlap} must be ≥ 0 and smaller than the tile {tile}")
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step))
    return [*starts, length - tile]


def normalise(image: np.ndarray, window: Window) -> np.ndarray:
    """Grey values → float32 in [0, 1] through a display window."""
    scaled = (image.astype(np.float32) - window.lo) / (window.hi - window.lo)
    return np.clip(np.nan_to_num(scaled), 0.0, 1.0)


@torch.inference_mode()
def predict_slice(
    model: nn.Module,
    image: np.ndarray,
    tile: int = 128,
    overlap: int = 32,
    batch: int = 8,
    device: str | torch.device = "cpu",
    dropout: bool = False,
) -> np.ndarray:
    """(C, H, W) float32 class probabilities of one normalised (H, W) slice.

    ``tile`` is the largest tile side (a fully convolutional network predicts a whole slice
    of up to tile × tile in one pass; bigger slices are cut into overlapping tiles). The
    slice is reflect-padded to whole tiles; tiles run in batches on ``device``,
    under CUDA autocast (AMP) when the device is a GPU. With ``dropout`` the network's
    dropout layers stay on (one MC-dropout sample; batch norm stays frozen).
    """
    device = torch.device(device)
    h, w = image.shape
    th, tw = tile_side(h, tile), tile_side(w, tile)
    ph, pw = max(h, th), max(w, tw)
    padded = np.pad(
        image.astype(np.float32, copy=False),
        ((0, ph - h), (0, pw - w)),
        mode="reflect" if min(h, w) > 1 else "edge",
    )
    weights = blend_window(th, tw)
    origins = [
        (y, x)
        for y in tile_origins(ph, th, min(overlap, th - 1))
        for x in tile_origins(pw, tw, min(overlap, tw - 1))
    ]
    total = None
    norm = np.zeros((ph, pw), dtype=np.float32)
    model.eval()
    if dropout:
        enable_dropout(model)
    try:
        for start in range(0, len(origins), batch):
            chunk = origins[start : start + batch]
            tiles = np.stack([padded[y : y + th, x : x + tw] for y, x in chunk])[:, None]
            inputs = torch.from_numpy(tiles).to(device)
            with torch.autocast(device.type, enabled=device.type == "cuda"):
                probs = model(inputs).float().softmax(dim=1).cpu().numpy()
            if total is None:
                total = np.zeros((probs.shape[1], ph, pw), dtype=np.float32)
            for (y, x), p in zip(chunk, probs, strict=True):
                total[:, y : y + th, x : x + tw] += p * weights
                norm[y : y + th, x : x + tw] += weights
    finally:
        model.eval()
    return (total / norm)[:, :h, :w]


def _write_prediction(
    stack: Stack,
    axes: tuple[str, ...],
    predict: Callable[[np.ndarray], np.ndarray],
    temps: list[Path],
    on_slice: Callable[[str, int], None],
) -> None:
    """Write the (z, y, x) labels into ``temps[0]`` and, if given, the float16 entropy into
    ``temps[1]``, predicting along ``axes`` (fused by summing probabilities).
    """
    with contextlib.ExitStack() as files:
        writers = [files.enter_context(tifffile.TiffWriter(t)) for t in temps]
        if axes == ("z",):
            fused = ((i, predict(image)) for i, image in stack.iter_slices("z"))
        else:
            scratch = files.enter_context(tempfile.TemporaryDirectory(dir=temps[0].parent))
            total = _fused_probabilities(stack, axes, predict, Path(scratch), on_slice)
            fused = ((z, total[:, z] / len(axes)) for z in range(stack.shape[0]))
        for z, probs in fused:
            dtype = np.uint8 if probs.shape[0] <= 256 else np.uint16
            writers[0].write(probs.argmax(axis=0).astype(dtype), contiguous=True)
            if len(writers) > 1:
                writers[1].write(entropy(probs).astype(np.float16), contiguous=True)
            if axes == ("z",):
                on_slice("z", z)


@dataclass(frozen=True)
class VolumePrediction:
    """Where a volume prediction went: label TIFF and float16 entropy TIFF (if asked for),
    both (z, y, x).
    """

    labels: Path
    uncertainty: Path | None


def _reserve(path: Path) -> None:
    """Allocate a sparse file's blocks now: a full disk raises ENOSPC here instead of
    killing the process (SIGBUS) when a memory-mapped page is first written.
    """
    with path.open("r+b") as handle:
        os.posix_fallocate(handle.fileno(), 0, path.stat().st_size)


def _fused_probabilities(
    stack: Stack,
    axes: tuple[str, ...],
    predict: Callable[[np.ndarray], np.ndarray],
    scratch: Path,
    on_slice: Callable[[str, int], None],
) -> np.memmap:
    """(C, Z, Y, X) float32 sum of the probabilities predicted along each of ``axes``, in
    a file-backed array under ``scratch`` (the OS pages it; it need not fit in memory).
    """
    total: np.memmap | None = None
    for axis in axes:
        order = "zyx".index(axis)
        for index, image in stack.iter_slices(axis_named(axis)):
            probs = predict(image)
            if total is None:
                total = np.lib.format.open_memmap(
                    scratch / "sum.npy", "w+", np.float32, (probs.shape[0], *stack.shape)
                )
                _reserve(scratch / "sum.npy")
            where: list[slice | int] = [slice(None)] * 4
            where[order + 1] = index
            total[tuple(where)] += probs
            on_slice(axis, index)
    assert total is not None, "a stack has at least one slice"
    return total


def predict_volume(
    model: nn.Module,
    stack: Stack,
    labels_path: str | os.PathLike[str],
    uncertainty_path: str | os.PathLike[str] | None = None,
    axes: tuple[str, ...] = ("z",),
    tile: int = 128,
    overlap: int = 32,
    batch: int = 8,
    device: str | torch.device = "cpu",
    window: Window | None = None,
    on_slice: Callable[[str, int], None] = lambda axis, index: None,
) -> VolumePrediction:
    """Predict a grayscale stack slice by slice; write labels (uint8, uint16 above 256
    classes) and, if asked, per-voxel entropy (float16) as (z, y, x) TIFFs.

    ``axes=("z",)`` streams each slice's result straight to disk. With more axes (Daemi et al. 2022,
    §4, segment XY, XZ and YZ re-slices; docs/references.md) the probabilities of every axis are
    summed in a file-backed scratch array beside the output, then fused slice by slice — volumes
    larger than memory work either way. Files are written under temporary names and renamed when
    complete. Returns the paths written.
    """
    unknown = set(axes) - set("zyx")
    if unknown or not axes:
        raise ValueError(f"axes {axes!r}: choose from z, y and x")
    targets = [Path(labels_path)] + ([Path(uncertainty_path)] if uncertainty_path else [])
    window = window or percentile_window(stack)

    def predict(image: np.ndarray) -> np.ndarray:
        return predict_slice(model, normalise(image, window), tile, overlap, batch, device)

    with writing("--out", targets[0]):
        for target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
        temps: list[Path] = []
        try:
            temps.extend(temp_file_beside(t) for t in targets)
            _write_prediction(stack, axes, predict, temps, on_slice)
            for temp, target in zip(temps, targets, strict=True):
                os.replace(temp, target)
        except BaseException:
            for temp in temps:
                temp.unlink(missing_ok=True)
            raise
    return VolumePrediction(targets[0], targets[1] if len(targets) > 1 else None)
