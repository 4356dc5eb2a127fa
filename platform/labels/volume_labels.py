"""Labelled slices placed back into their (z, y, x) volume, in the volume's own label
values, with one value for every voxel nobody labelled."""

from __future__ import annotations

import numpy as np

from tomoloop.labels.phases import IGNORE, PhaseMap


def unlabelled_value(phases: PhaseMap) -> int:
    """The value of unlabelled voxels: 255 (uint8 volumes) unless a phase uses it or a
    larger value, then 65535 (uint16)."""
    return IGNORE if max(phases.values) < IGNORE else np.iinfo(np.uint16).max


def label_dtype(phases: PhaseMap) -> np.dtype:
    """uint8 when :func:`unlabelled_value` is 255, else uint16."""
    return np.dtype(np.uint8 if unlabelled_value(phases) == IGNORE else np.uint16)


def paint_slice(
    volume: np.ndarray, axis: str, index: int, classes: np.ndarray, phases: PhaseMap
) -> None:
    """Write an (h, w) class-index slice (uint8 with :data:`IGNORE` unlabelled, or dense
    uint16) into the (z, y, x) ``volume`` at ``axis`` ``index``, as label values; its
    unlabelled pixels leave the volume as it was."""
    where: list[slice | int] = [slice(None)] * 3
    where["zyx".index(axis)] = index
    plane = volume[tuple(where)]
    if plane.shape != classes.shape:
        raise ValueError(
            f"a {classes.shape} label does not fit {axis} slice {index} {plane.shape} "
            f"of a {volume.shape} volume"
        )
    values = np.asarray(phases.values, dtype=volume.dtype)
    labelled = classes != IGNORE if classes.dtype == np.uint8 else np.ones(classes.shape, bool)
    plane[labelled] = values[classes[labelled]]
