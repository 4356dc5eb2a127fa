"""Raw binary stacks: voxels in C order (x fastest), shape and dtype given by the source
(``scan.raw:ZxYxX:DTYPE[:OFFSET]``), memory-mapped so a slice reads only its bytes."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tomoloop.errors import StackReadError
from tomoloop.stacks.stack import AXES, ArrayReader, Stack, VoxelSize, chosen_voxel_size, native

if TYPE_CHECKING:
    from tomoloop.stacks.opener import RawLayout


def raw_dtype(name: str) -> np.dtype:
    """The NumPy dtype a raw source names (``uint16``, ``<f4``, ``>u2``).

    Raises:
        StackReadError: not a NumPy dtype, or not a number type.
    """
    try:
        dtype = np.dtype(name)
    except TypeError as exc:
        raise StackReadError(
            f"raw dtype {name!r} is not a NumPy dtype: use e.g. uint8, uint16, float32 "
            "or '>u2' for big-endian"
        ) from exc
    if dtype.kind not in "biuf":
        raise StackReadError(f"raw dtype {name!r} is not a number type: use e.g. uint16")
    return dtype


def open_raw(path: Path, layout: RawLayout, voxel_size: VoxelSize | None = None) -> Stack:
    """Open an existing raw binary file lazily (read-only memory map).

    Raises:
        StackReadError: the dtype is unknown, the shape is empty, or the file's size is not
            ``offset + z*y*x*itemsize`` bytes.
    """
    dtype = raw_dtype(layout.dtype)
    if 0 in layout.shape:
        raise StackReadError(f"raw shape {layout.shape} of {path} is empty: give z x y x x > 0")
    want = layout.offset + math.prod(layout.shape) * dtype.itemsize
    have = path.stat().st_size
    if have != want:
        shape = "x".join(map(str, layout.shape))
        raise StackReadError(
            f"{path} holds {have} bytes but {shape} {dtype} after a {layout.offset}-byte "
            f"header needs {want}: check the :ZxYxX:DTYPE[:OFFSET] part of the source"
        )
    array = np.memmap(path, dtype=dtype, mode="r", offset=layout.offset, shape=layout.shape)
    reader = ArrayReader(array, AXES, path, (OSError,), lambda: [path])
    return Stack(
        path=path,
        shape=layout.shape,
        dtype=native(dtype),
        voxel_size=chosen_voxel_size(voxel_size, None),
        source=str(path.absolute()) + layout.suffix(),
        _reader=reader,
    )
