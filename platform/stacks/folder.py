"""A folder of 2D TIFF or PNG slices as a stack: one file per z, in natural order
(``slice_2`` before ``slice_10``), each file decoded only when a slice needs it.

Opening reads every file's header (shape, dtype), never its pixels. Voxel size: a TIFF
slice's ImageJ / OME metadata, a PNG's ``pHYs`` chunk (pixels per metre; z taken as x).
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import cv2
import numpy as np
import tifffile

from tomoloop.errors import StackReadError
from tomoloop.stacks.stack import (
    PlaneReader,
    Stack,
    VoxelSize,
    chosen_voxel_size,
    length_um,
    zyx_voxel_size,
)
from tomoloop.stacks.tiff import voxel_size_from_metadata

TIFF_SUFFIXES = (".tif", ".tiff")
PNG_SUFFIXES = (".png",)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_GRAY = 0  # IHDR colour type of a single-channel image
_PNG_METRE = 1  # pHYs unit specifier: pixels per metre
_DECODE_ERRORS = (ValueError, OSError, tifffile.TiffFileError, struct.error, cv2.error)


def natural_key(name: str) -> list[str | int]:
    """Sort key that orders digit runs by value: ``s2`` < ``s10`` (case ignored)."""
    return [int(t) if k % 2 else t.lower() for k, t in enumerate(re.split(r"(\d+)", name))]


def slice_files(folder: Path) -> list[Path]:
    """The folder's TIFF or PNG files (not hidden ones), in natural order.

    Raises:
        StackReadError: it holds none, or both TIFF and PNG files.
    """
    files = [
        p
        for p in folder.iterdir()
        if p.is_file()
        and not p.name.startswith(".")
        and p.suffix.lower() in TIFF_SUFFIXES + PNG_SUFFIXES
    ]
    if not files:
        raise StackReadError(
            f"folder {folder} holds no .tif/.tiff/.png slices: give the folder the slices are in"
        )
    kinds = {p.suffix.lower() in TIFF_SUFFIXES for p in files}
    if len(kinds) > 1:
        raise StackReadError(
            f"folder {folder} holds both TIFF and PNG files: keep the slices of one stack "
            "(one format) in a folder of their own"
        )
    return sorted(files, key=lambda p: natural_key(p.name))


def open_folder(folder: Path, voxel_size: VoxelSize | None = None) -> Stack:
    """Open a folder of 2D slices lazily (headers are read now, pixels on demand).

    Raises:
        StackReadError: no slices, mixed formats, an unreadable file, a slice that is not
            a single-channel 2D image, or slices of different shapes or dtypes.
    """
    files = slice_files(folder)
    tiff = files[0].suffix.lower() in TIFF_SUFFIXES
    header = _tiff_header if tiff else _png_header
    first_shape, first_dtype = header(files[0])
    for path in files[1:]:
        shape, dtype = header(path)
        if (shape, dtype) != (first_shape, first_dtype):
            raise StackReadError(
                f"slice {path.name} is {shape} {dtype} but {files[0].name} is {first_shape} "
                f"{first_dtype}: every slice in {folder} must have one shape and dtype"
            )
    shape3 = (len(files), first_shape[0], first_shape[1])
    read = _read_tiff if tiff else _read_png
    reader = PlaneReader(
        lambda i: read(files[i]), shape3, first_dtype, folder, _DECODE_ERRORS, lambda: files
    )
    found = _tiff_voxel_size(files[0]) if tiff else _png_voxel_size(files[0])
    return Stack(
        path=folder,
        shape=shape3,
        dtype=first_dtype,
        voxel_size=chosen_voxel_size(voxel_size, found),
        source=str(folder.absolute()),
        _reader=reader,
    )


def _unreadable(path: Path, why: str) -> StackReadError:
    return StackReadError(
        f"slice {path} is not a readable image ({why}): re-export it, or move it out of the folder"
    )


def _plane_shape(path: Path, shape: tuple[int, ...]) -> tuple[int, int]:
    """(y, x) of a slice whose other axes are all 1; refuse colour / multi-page slices."""
    plane = tuple(n for n in shape if n != 1)
    if len(plane) > 2 or len(shape) < 2:
        raise StackReadError(
            f"slice {path} is {shape}; a slice folder holds single-channel 2D images: "
            "convert RGB or multi-page files to one grayscale image per slice"
        )
    return (shape[-2], shape[-1])


def _tiff_header(path: Path) -> tuple[tuple[int, int], np.dtype]:
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            return _plane_shape(path, tuple(series.shape)), np.dtype(series.dtype)
    except (tifffile.TiffFileError, ValueError, OSError, IndexError, struct.error) as exc:
        raise _unreadable(path, str(exc)) from exc


def _png_header(path: Path) -> tuple[tuple[int, int], np.dtype]:
    """(height, width) and dtype from the IHDR chunk (the first 33 bytes)."""
    with path.open("rb") as fh:
        head = fh.read(33)
    if len(head) < 33 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise _unreadable(path, "no PNG header")
    width, height, depth, colour = struct.unpack(">IIBB", head[16:26])
    if colour != _PNG_GRAY:
        raise StackReadError(
            f"slice {path} is a colour PNG (colour type {colour}); a slice folder holds "
            "single-channel images: save the slices as grayscale"
        )
    return (height, width), np.dtype(np.uint16 if depth == 16 else np.uint8)


def _read_tiff(path: Path) -> np.ndarray:
    image = tifffile.imread(path)
    return image.reshape(_plane_shape(path, image.shape))


def _read_png(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError(f"{path.name} cannot be decoded")
    return image


def _tiff_voxel_size(path: Path) -> VoxelSize | None:
    with tifffile.TiffFile(path) as tif:
        return voxel_size_from_metadata(tif)


def _png_voxel_size(path: Path) -> VoxelSize | None:
    """(x, y, x) µm from a PNG's pHYs chunk in pixels per metre; None without one."""
    with path.open("rb") as fh:
        fh.seek(len(_PNG_SIGNATURE))
        while len(head := fh.read(8)) == 8:
            length, kind = struct.unpack(">I4s", head)
            if kind in (b"IDAT", b"IEND"):
                return None
            if kind != b"pHYs" or length != 9:
                fh.seek(length + 4, 1)  # data and CRC
                continue
            px, py, unit = struct.unpack(">IIB", fh.read(9))
            if unit != _PNG_METRE or not px or not py:
                return None
            return zyx_voxel_size({"y": length_um(1 / py, "m"), "x": length_um(1 / px, "m")})
    return None
