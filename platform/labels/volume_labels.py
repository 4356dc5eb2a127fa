"""Labelled slices placed back into their (z, y, x) volume, in the volume's own label
values, with one value for every voxel nobody labelled."""

from __future__ import annotations

import numpy as np

from tomoloop.labels.phases import IGNORE, PhaseMap


def unlabelled_value(phases: PhaseMap) -> int:
    """The value of unlabelled voxels: the largest value of the smallest unsigned type
    above every phase value — 255 (uint8 volumes), 65535 (uint16) when a phase uses 255 or
    more, 2³² − 1 (uint32) when a phase is 65535 itself."""
    top = max(phases.values)
    return next(
        int(np.iinfo(t).max) for t in (np.uint8, np.uint16, np.uint32) if top < np.iinfo(t).max
    )


def label_dtype(phases: PhaseMap) -> np.dtype:
    """The unsigned type whose largest value is :func:`unlabelled_value`."""
    return np.min_scalar_type(unlabelled_value(phases))


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
