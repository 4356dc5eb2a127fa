"""Overlays people look at: a grayscale slice with phases tinted and instances outlined."""

from __future__ import annotations

import cv2
import numpy as np

_PHASE_COLOURS = np.array(
    [
        [0, 0, 0],
        [230, 159, 0],
        [86, 180, 233],
        [0, 158, 115],
        [240, 228, 66],
        [0, 114, 178],
        [213, 94, 0],
        [204, 121, 167],
    ],
    dtype=np.float32,
)  # Okabe–Ito, colour-blind safe; class 0 untinted


def instance_colours(n: int, seed: int = 0) -> np.ndarray:
    """(n, 3) uint8 bright RGB colours, reproducible for a seed."""
    rng = np.random.default_rng(seed)
    hsv = np.stack(
        [rng.integers(0, 180, n), np.full(n, 220), rng.integers(180, 256, n)], axis=1
    ).astype(np.uint8)
    return cv2.cvtColor(hsv[np.newaxis], cv2.COLOR_HSV2RGB)[0]


def overlay(
    gray: np.ndarray,
    classes: np.ndarray | None = None,
    instances: np.ndarray | None = None,
    alpha: float = 0.35,
    min_side: int = 512,
) -> np.ndarray:
    """RGB uint8 (h, w, 3) picture of one slice.

    Args:
        gray: (h, w) uint8 grayscale.
        classes: (h, w) class indices; classes ≥ 1 are tinted with ``alpha``.
        instances: (h, w) instance ids (0 = none); each instance is outlined in its colour.
        min_side: small slices are enlarged by a whole factor (nearest neighbour) until
            their longer side is at least this many pixels, so outlines stay readable.

    Returns:
        (h·f, w·f, 3) uint8 with f = max(1, min_side // max(h, w)).
    """
    f = max(1, min_side // max(gray.shape))
    gray = np.kron(gray, np.ones((f, f), dtype=gray.dtype))
    classes, instances = (
        None if a is None else np.kron(a, np.ones((f, f), dtype=a.dtype))
        for a in (classes, instances)
    )
    rgb = np.repeat(gray[..., np.newaxis], 3, axis=2).astype(np.float32)
    if classes is not None:
        tint = _PHASE_COLOURS[classes % len(_PHASE_COLOURS)]
        tinted = classes > 0
        rgb[tinted] = (1 - alpha) * rgb[tinted] + alpha * tint[tinted]
    out = rgb.round().astype(np.uint8)
    if instances is not None and instances.any():
        ids = np.unique(instances[instances > 0])
        colours = instance_colours(len(ids))
        for colour, i in zip(colours, ids, strict=True):
            contours, _ = cv2.findContours(
                (instances == i).astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE
            )
            cv2.drawContours(out, contours, -1, tuple(int(c) for c in colour), 1)
    return out
