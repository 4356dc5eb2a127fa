"""Prediction on slices and whole volumes: tiled with overlap and blended, streamed to disk.

A slice larger than the network's tile is cut into overlapping tiles; each tile's
probabilities are weighted by a window that falls to almost zero at its edges, so every
pixel is decided mostly by tiles that see it with full context and no seams appear.
Volumes are predicted slice by slice and written as they go (labels uint8/uint16 TIFF,
per-voxel uncertainty float16 TIFF), so they need not fit in memory.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
import torch
from torch import nn

from tomoloop.stacks import Stack, Window, percentile_window
from tomoloop.uncertainty import entropy


def blend_window(tile: int) -> np.ndarray:
    """(tile, tile) float32 weights: a raised cosine, ≈1 in the middle, small at the edges."""
    ramp = np.sin(np.pi * (np.arange(tile) + 0.5) / tile) ** 2
    return np.outer(ramp, ramp).astype(np.float32) + 1e-6


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


@torch.no_grad()
def predict_slice(
    model: nn.Module,
    image: np.ndarray,
    tile: int = 128,
    overlap: int = 32,
    batch: int = 8,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """(C, H, W) float32 class probabilities of one normalised (H, W) slice.

    The slice is reflect-padded to at least one tile; tiles run in batches on ``device``,
    under CUDA autocast (AMP) when the device is a GPU.
    """
    device = torch.device(device)
    h, w = image.shape
    ph, pw = max(h, tile), max(w, tile)
    padded = np.pad(image, ((0, ph - h), (0, pw - w)), mode="reflect" if min(h, w) > 1 else "edge")
    weights = blend_window(tile)
    origins = [
        (y, x) for y in tile_origins(ph, tile, overlap) for x in tile_origins(pw, tile, overlap)
    ]
    total = None
    norm = np.zeros((ph, pw), dtype=np.float32)
    model.eval()
    for start in range(0, len(origins), batch):
        chunk = origins[start : start + batch]
        tiles = np.stack([padded[y : y + tile, x : x + tile] for y, x in chunk])[:, None]
        inputs = torch.from_numpy(tiles).to(device)
        with torch.autocast(device.type, enabled=device.type == "cuda"):
            probs = model(inputs).float().softmax(dim=1).cpu().numpy()
        if total is None:
            total = np.zeros((probs.shape[1], ph, pw), dtype=np.float32)
        for (y, x), p in zip(chunk, probs, strict=True):
            total[:, y : y + tile, x : x + tile] += p * weights
            norm[y : y + tile, x : x + tile] += weights
    return (total / norm)[:, :h, :w]


@dataclass(frozen=True)
class VolumePrediction:
    """Where a volume prediction went: label TIFF and float16 entropy TIFF, (z, y, x)."""

    labels: Path
    uncertainty: Path


def predict_volume(
    model: nn.Module,
    stack: Stack,
    out_dir: str | os.PathLike[str],
    tile: int = 128,
    overlap: int = 32,
    batch: int = 8,
    device: str | torch.device = "cpu",
    window: Window | None = None,
) -> VolumePrediction:
    """Predict every z slice of a grayscale stack; write labels and entropy as it goes.

    Files are written under temporary names and renamed when complete.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    window = window or percentile_window(stack)
    targets = (out / "labels.tif", out / "uncertainty.tif")
    temps = []
    for target in targets:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", dir=out)
        os.close(fd)
        temps.append(Path(name))
    try:
        with tifffile.TiffWriter(temps[0]) as labels, tifffile.TiffWriter(temps[1]) as unsure:
            for _, image in stack.iter_slices("z"):
                probs = predict_slice(model, normalise(image, window), tile, overlap, batch, device)
                dtype = np.uint8 if probs.shape[0] <= 256 else np.uint16
                labels.write(probs.argmax(axis=0).astype(dtype), contiguous=True)
                unsure.write(entropy(probs).astype(np.float16), contiguous=True)
        for temp, target in zip(temps, targets, strict=True):
            os.replace(temp, target)
    except BaseException:
        for temp in temps:
            temp.unlink(missing_ok=True)
        raise
    return VolumePrediction(*targets)
