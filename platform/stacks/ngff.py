"""OME-Zarr out (OME-NGFF 0.4, zarr format 2): a (z, y, x) volume as a multiscale pyramid,
either an image (grey values, uncertainty) or a label image that names its values and
colours them, so napari (napari-ome-zarr), neuroglancer and ome-zarr-py open it.

Level 0 is the volume itself; each next level halves every side (rounded up) until the
largest side fits in one chunk: grey values by the mean of 2×2×2 blocks (edge voxels
repeated where a side is odd), labels by every second voxel (so a level never holds a value
that is not a phase). Level k's scale is the voxel size × 2^k. The volume is written in
slabs of one chunk of z slices and each level is read back from the one below in slabs:
a volume need not fit in memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from itertools import pairwise
from pathlib import Path

import numpy as np
import zarr

from tomoloop.outputs import new_folder
from tomoloop.stacks.stack import Stack, VoxelSize

NGFF_VERSION = "0.4"
CHUNK = 64
"""Chunk side (voxels) of every level; the pyramid stops when a level fits in one chunk."""

UNLABELLED_RGBA = (0, 0, 0, 0)
# label colours (RGBA 0–255) in phase order: matplotlib's tab10, opaque
PALETTE = (
    (31, 119, 180, 255),
    (255, 127, 14, 255),
    (44, 160, 44, 255),
    (214, 39, 40, 255),
    (148, 103, 189, 255),
    (140, 86, 75, 255),
    (227, 119, 194, 255),
    (127, 127, 127, 255),
    (188, 189, 34, 255),
    (23, 190, 207, 255),
)


def pyramid_shapes(shape: tuple[int, int, int], chunk: int = CHUNK) -> list[tuple[int, ...]]:
    """(z, y, x) shapes of the levels: ``shape``, then each side halved (rounded up) until
    the largest side is ≤ ``chunk``."""
    shapes: list[tuple[int, ...]] = [tuple(shape)]
    while max(shapes[-1]) > chunk:
        shapes.append(tuple(-(-side // 2) for side in shapes[-1]))
    return shapes


def downsample(block: np.ndarray, labels: bool) -> np.ndarray:
    """A (z, y, x) block at half resolution, each side rounded up, same dtype: every
    second voxel for labels; for grey values the mean of each 2×2×2 block (the last voxel
    repeated along an odd side), rounded for integer types."""
    if labels:
        return block[::2, ::2, ::2]
    pad = [(0, side % 2) for side in block.shape]
    even = np.pad(block, pad, mode="edge").astype(np.float64)
    z, y, x = (side // 2 for side in even.shape)
    mean = even.reshape(z, 2, y, 2, x, 2).mean(axis=(1, 3, 5))
    if block.dtype.kind in "iu":
        mean = np.rint(mean)
    return mean.astype(block.dtype)


def multiscales(name: str, levels: int, voxel_size: VoxelSize | None, labels: bool) -> list[dict]:
    """The ``multiscales`` attribute of a ``levels``-level (z, y, x) pyramid; scales in µm
    (``micrometer`` axes) when the voxel size is known, in voxels otherwise."""
    base = voxel_size or (1.0, 1.0, 1.0)
    unit = {"unit": "micrometer"} if voxel_size is not None else {}
    return [
        {
            "version": NGFF_VERSION,
            "name": name,
            "axes": [{"name": axis, "type": "space", **unit} for axis in "zyx"],
            "datasets": [
                {
                    "path": str(k),
                    "coordinateTransformations": [
                        {"type": "scale", "scale": [float(s) * 2**k for s in base]}
                    ],
                }
                for k in range(levels)
            ],
            "type": "nearest" if labels else "mean",
            "metadata": {"method": "tomoloop.stacks.ngff.downsample"},
        }
    ]


def image_label(names: Mapping[int, str], unlabelled: int | None = None) -> dict:
    """The ``image-label`` attribute: each label value's name (``properties``) and colour
    (``colors``, RGBA 0–255); ``unlabelled`` (if given) is named so and transparent."""
    values = [*names, *([] if unlabelled is None else [unlabelled])]
    colours = {v: PALETTE[k % len(PALETTE)] for k, v in enumerate(names)}
    if unlabelled is not None:
        colours[unlabelled] = UNLABELLED_RGBA
    return {
        "version": NGFF_VERSION,
        "colors": [{"label-value": int(v), "rgba": list(colours[v])} for v in values],
        "properties": [{"label-value": int(v), "name": names.get(v, "unlabelled")} for v in values],
    }


def write_ome_zarr(
    target: str | Path,
    slices: Iterable[np.ndarray],
    shape: tuple[int, int, int],
    dtype: np.dtype | type,
    voxel_size: VoxelSize | None = None,
    names: Mapping[int, str] | None = None,
    unlabelled: int | None = None,
    chunk: int = CHUNK,
) -> list[tuple[int, ...]]:
    """Write the z slices of a (z, y, x) volume as a new OME-Zarr folder ``target``
    (renamed into place when complete); the shapes of its levels.

    Args:
        slices: the (y, x) slices in z order, ``shape[0]`` of them.
        voxel_size: (z, y, x) in µm, or None (scales then count voxels).
        names: label value → phase name for a label image (``image-label``); None for an
            image (grey values, uncertainty).
        unlabelled: for a label image, the value of voxels nobody labelled (transparent).
    """
    target = Path(target)
    labels = names is not None
    shapes = pyramid_shapes(shape, chunk)
    with new_folder("--out", target) as tmp:
        group = zarr.open_group(str(tmp), mode="w", zarr_format=2)
        arrays = [
            group.create_array(str(k), shape=s, chunks=(chunk,) * 3, dtype=dtype, fill_value=0)
            for k, s in enumerate(shapes)
        ]
        _write_slabs(arrays[0], slices, chunk)
        for below, level in pairwise(arrays):
            for start in range(0, level.shape[0], chunk):
                level[start : start + chunk] = downsample(
                    np.asarray(below[2 * start : 2 * (start + chunk)]), labels
                )
        attrs: dict = {"multiscales": multiscales(target.name, len(shapes), voxel_size, labels)}
        if names is not None:
            attrs["image-label"] = image_label(names, unlabelled)
        group.attrs.update(attrs)
    return shapes


def _write_slabs(array: zarr.Array, slices: Iterable[np.ndarray], depth: int) -> None:
    """Fill ``array`` (z, y, x) from its z slices, ``depth`` slices per write."""
    slab: list[np.ndarray] = []
    start = 0
    for image in slices:
        slab.append(image)
        if len(slab) == depth:
            array[start : start + depth] = np.stack(slab)
            start, slab = start + depth, []
    if slab:
        array[start : start + len(slab)] = np.stack(slab)
        start += len(slab)
    if start != array.shape[0]:
        raise ValueError(f"{start} slices for a volume of {array.shape[0]}")


def stack_to_ome_zarr(
    stack: Stack,
    target: str | Path,
    names: Mapping[int, str] | None = None,
    voxel_size: VoxelSize | None = None,
    dtype: np.dtype | type | None = None,
) -> list[tuple[int, ...]]:
    """A lazy TIFF stack as a new OME-Zarr folder (:func:`write_ome_zarr`), read one z slice
    at a time; ``voxel_size`` defaults to the stack's own, ``dtype`` to the stack's (float16
    should become float32: neuroglancer reads no float16); the level shapes."""
    cast = np.dtype(dtype or stack.dtype)
    return write_ome_zarr(
        target,
        (image.astype(cast, copy=False) for _, image in stack.iter_slices("z")),
        stack.shape,
        cast,
        voxel_size or stack.voxel_size,
        names,
    )
