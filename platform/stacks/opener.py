"""One opener for every stack format: :func:`open_stack` reads a *stack source* and
dispatches on what it names.

A stack source is a path, optionally followed by where the volume is inside it:

- ``scan.tif`` — a TIFF stack (multipage, ImageJ, OME-TIFF);
- ``scan.h5`` — HDF5 / NeXus: ``/exchange/data`` (Data Exchange) or the NeXus default
  signal; ``scan.h5:/entry/data/data`` names any dataset;
- ``scan.zarr`` — a Zarr v2/v3 array, or an OME-Zarr image (level 0 of its multiscale);
  ``scan.ome.zarr:/1`` names an array of the group (here level 1);
- ``slices/`` — a folder of 2D TIFF or PNG slices, in natural order (2 before 10);
- ``scan.raw:ZxYxX:DTYPE[:OFFSET]`` — raw binary (C order, ``DTYPE`` a NumPy name such as
  ``uint16`` or ``>u2`` for big-endian, ``OFFSET`` header bytes to skip).
- ``s3://bucket/scan.tif`` (any fsspec URL) — a TIFF stack in an object store, read in
  byte ranges as slices are asked for (:mod:`tomoloop.stacks.remote`).

The whole source is what the registry keeps, so every command and flow reopens the same
volume from it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from tomoloop.errors import StackReadError
from tomoloop.stacks.remote import is_url, open_remote
from tomoloop.stacks.stack import Stack, VoxelSize

URL_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8")  # TIFF and BigTIFF: read from URLs
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5", ".nxs", ".nx5", ".cxi")
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_ZARR_MARKERS = ("zarr.json", ".zgroup", ".zarray")
_RAW = re.compile(
    r"^(?P<path>.+):(?P<shape>\d+x\d+x\d+):(?P<dtype>[<>=|]?[A-Za-z][A-Za-z0-9]*)"
    r"(?::(?P<offset>\d+))?$"
)
_INNER = re.compile(
    r"^(?P<path>.+?(?:\.zarr|" + "|".join(map(re.escape, HDF5_SUFFIXES)) + r")):(?P<inner>.*)$",
    re.I,
)


@dataclass(frozen=True)
class RawLayout:
    """How a raw binary file is laid out: (z, y, x) in voxels, NumPy dtype name, header
    bytes before the first voxel."""

    shape: tuple[int, int, int]
    dtype: str
    offset: int = 0

    def suffix(self) -> str:
        """The ``:ZxYxX:DTYPE[:OFFSET]`` part of a source."""
        tail = f":{self.offset}" if self.offset else ""
        return f":{'x'.join(map(str, self.shape))}:{self.dtype}{tail}"


@dataclass(frozen=True)
class StackSource:
    """A parsed stack source: the file or folder, the dataset / array inside it (HDF5,
    Zarr), or the raw layout."""

    path: Path
    inner: str | None = None
    raw: RawLayout | None = None

    def text(self) -> str:
        """The source as a string, with the path made absolute."""
        base = str(self.path.absolute())
        if self.raw is not None:
            return base + self.raw.suffix()
        return base if self.inner is None else f"{base}:{self.inner}"


def parse_source(source: str | os.PathLike[str]) -> StackSource:
    """Split a stack source into path and inner dataset / raw layout (nothing is opened).

    An existing path is taken whole; otherwise a ``:ZxYxX:DTYPE`` tail makes a raw
    source, and ``FILE:INNER`` after an HDF5 or Zarr name (or after any existing path)
    names a dataset inside it.
    """
    text = os.fspath(source)
    if Path(text).exists():
        return StackSource(Path(text))
    raw = _RAW.match(text)
    if raw:
        shape = tuple(int(n) for n in raw["shape"].split("x"))
        layout = RawLayout((shape[0], shape[1], shape[2]), raw["dtype"], int(raw["offset"] or 0))
        return StackSource(Path(raw["path"]), raw=layout)
    for k, char in enumerate(text):
        if char == ":" and k and Path(text[:k]).exists():
            return StackSource(Path(text[:k]), inner=text[k + 1 :])
    named = _INNER.match(text)
    if named:
        return StackSource(Path(named["path"]), inner=named["inner"])
    return StackSource(Path(text))


def source_path(source: str | os.PathLike[str]) -> Path:
    """The file or folder a stack source reads (for checks that outputs spare inputs)."""
    return parse_source(source).path


def source_name(source: str | os.PathLike[str]) -> str:
    """The name of the file a stack source reads, for messages: ``scan.h5`` for
    ``/d/scan.h5:/exchange/data``, ``scan.tif`` for ``s3://bucket/run/scan.tif``."""
    text = os.fspath(source)
    if is_url(text):
        return PurePosixPath(urlsplit(text).path).name
    return source_path(text).name


def open_stack(source: str | os.PathLike[str], voxel_size: VoxelSize | None = None) -> Stack:
    """Open a stack lazily, whatever its format (see the module docstring for sources).

    Args:
        source: a path, ``FILE:/dataset`` (HDF5, Zarr) or ``FILE:ZxYxX:DTYPE`` (raw).
        voxel_size: (z, y, x) in µm; overrides what the file says.

    Raises:
        StackReadError: the file is missing, unreadable, corrupt, empty, or holds more than
            one channel / time point; a named dataset is missing; a raw file's size does
            not match its layout.
        StackValidationError: the voxel size is not three lengths in (0, 1 m].
    """
    if is_url(source):  # a TIFF at a URL: read in byte ranges (tomoloop.stacks.remote)
        from tomoloop.stacks.tiff import open_tiff

        url = os.fspath(source)
        if not source_name(url).lower().endswith(URL_SUFFIXES):
            raise StackReadError(
                f"stack {url}: only TIFF stacks (.tif, .tiff, .btf) are read from URLs; copy the "
                "file to a local disk, or convert it to TIFF"
            )
        return open_tiff(open_remote(url), voxel_size, url)
    parsed = parse_source(source)
    p = parsed.path
    if not p.exists():
        raise StackReadError(f"stack {p} does not exist: check the path")
    if parsed.raw is not None:
        from tomoloop.stacks.raw import open_raw

        return open_raw(p, parsed.raw, voxel_size)
    if p.is_dir():
        if p.suffix.lower() == ".zarr" or any((p / m).exists() for m in _ZARR_MARKERS):
            from tomoloop.stacks.zarr_store import open_zarr

            return open_zarr(p, parsed.inner, voxel_size)
        _no_inner(parsed, "a folder of slices")
        from tomoloop.stacks.folder import open_folder

        return open_folder(p, voxel_size)
    if not p.is_file():
        raise StackReadError(f"stack {p} is not a file or folder: check the path")
    if p.suffix.lower() in HDF5_SUFFIXES or _starts_hdf5(p):
        from tomoloop.stacks.hdf5 import open_hdf5

        return open_hdf5(p, parsed.inner, voxel_size)
    _no_inner(parsed, "not HDF5 or Zarr")
    from tomoloop.stacks.tiff import open_tiff

    return open_tiff(p, voxel_size)


def _no_inner(parsed: StackSource, what: str) -> None:
    if parsed.inner is not None:
        raise StackReadError(
            f"{parsed.path} is {what}: only HDF5 and Zarr sources name a dataset inside "
            f"(':{parsed.inner}'); give the path alone"
        )


def _starts_hdf5(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(len(_HDF5_SIGNATURE)) == _HDF5_SIGNATURE
