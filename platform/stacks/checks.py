"""Checks on stacks that read fine: shapes that must agree, label dtypes and values."""

from __future__ import annotations

import numpy as np

from tomoloop.errors import StackValidationError
from tomoloop.stacks.stack import Stack


def check_same_shape(gray: Stack, labels: Stack, what: str = "labels") -> None:
    """Raise StackValidationError unless the grayscale stack and ``labels`` (``what``: e.g.
    "prediction") have one shape."""
    if gray.shape != labels.shape:
        raise StackValidationError(
            f"grayscale {gray.path.name} is {gray.shape} (z,y,x) but {what} {labels.path.name} "
            f"are {labels.shape}: both stacks must cover the same voxels"
        )


def check_volume_shape(labels: Stack, shape: tuple[int, int, int], volume: str, what: str) -> None:
    """Raise StackValidationError unless ``labels`` (``what``: e.g. "gold labels") has the
    (z, y, x) ``shape`` of registered volume ``volume``."""
    if labels.shape != shape:
        raise StackValidationError(
            f"{what} {labels.path.name} are {labels.shape} (z,y,x) but volume {volume!r} is "
            f"{shape}: give the label stack of that volume"
        )


def check_label_dtype(labels: Stack) -> None:
    """Raise StackValidationError unless the label stack stores integers (or booleans)."""
    if labels.dtype.kind not in "iub":
        raise StackValidationError(
            f"labels in {labels.path.name} are {labels.dtype}; a label stack holds integer "
            "phase values: save it as uint8/uint16 (e.g. after thresholding)"
        )


def present_values(image: np.ndarray) -> np.ndarray:
    """Sorted distinct values of an integer image (bincount for 8/16-bit, fast)."""
    if image.dtype.kind in "ub" and image.dtype.itemsize <= 2:
        return np.flatnonzero(np.bincount(image.ravel().astype(np.intp, copy=False)))
    return np.unique(image)


def scan_label_values(labels: Stack) -> list[int]:
    """Every distinct value of a label stack, read one z slice at a time."""
    check_label_dtype(labels)
    seen: set[int] = set()
    for _, image in labels.iter_slices("z"):
        seen.update(present_values(image).tolist())
    return sorted(seen)
