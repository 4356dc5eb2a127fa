"""Grey-value windows: which stored values map to 0..255 for display and 8-bit export."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tomoloop.errors import StackValidationError
from tomoloop.stacks.stack import Stack


@dataclass(frozen=True)
class Window:
    """Grey-value window mapped to 0..255: ``lo`` → 0, ``hi`` → 255 (in stored units)."""

    lo: float
    hi: float


def percentile_window(
    stack: Stack, percentiles: tuple[float, float] = (0.5, 99.5), max_slices: int = 16
) -> Window:
    """Window for 8-bit export from percentiles of up to ``max_slices`` evenly spaced z slices.

    uint8 stacks keep their values (0..255) unchanged.
    """
    if stack.dtype == np.uint8:
        return Window(0.0, 255.0)
    nz = stack.shape[0]
    picks = np.unique(np.linspace(0, nz - 1, min(nz, max_slices)).round().astype(int))
    sample = np.concatenate([s.ravel() for _, s in stack.iter_slices("z", picks.tolist())])
    sample = sample[np.isfinite(sample)] if sample.dtype.kind == "f" else sample
    if sample.size == 0:
        raise StackValidationError(f"{stack.path} holds no finite grey values (all NaN/inf)")
    lo, hi = np.percentile(sample, percentiles)
    return Window(float(lo), float(hi) if hi > lo else float(lo) + 1.0)


def to_uint8(image: np.ndarray, window: Window) -> np.ndarray:
    """Map grey values through ``window`` to uint8 (clipped; NaN → 0). Shape is kept."""
    if image.dtype == np.uint8 and window == Window(0.0, 255.0):
        return image
    scaled = (image.astype(np.float32) - window.lo) * (255.0 / (window.hi - window.lo))
    return np.nan_to_num(np.clip(scaled, 0, 255), nan=0.0).round().astype(np.uint8)
