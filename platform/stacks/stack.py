"""The lazy :class:`Stack` every format opens to: a 3D volume with axes ``(z, y, x)``.

A stack never holds the whole volume: it asks its :class:`Reader` (one per format: TIFF,
HDF5, Zarr, a folder of slices, raw binary) for the voxels a slice or band needs. Voxel
sizes are in micrometres, ordered ``(z, y, x)``; lengths in other units are converted
with :data:`UM_PER_UNIT`.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from tomoloop.errors import StackReadError, StackValidationError
from tomoloop.stacks.remote import is_url

Axis = Literal["z", "y", "x"]
AXES: tuple[Axis, ...] = ("z", "y", "x")
VoxelSize = tuple[float, float, float]
Index = int | slice

UM_PER_UNIT = {  # micrometres per length unit, by the names files and people use
    "um": 1.0,
    "µm": 1.0,
    "μm": 1.0,
    "micron": 1.0,
    "microns": 1.0,
    "micrometer": 1.0,
    "micrometre": 1.0,
    "\\u00b5m": 1.0,
    "nm": 1e-3,
    "nanometer": 1e-3,
    "nanometre": 1e-3,
    "mm": 1e3,
    "millimeter": 1e3,
    "millimetre": 1e3,
    "cm": 1e4,
    "centimeter": 1e4,
    "m": 1e6,
    "meter": 1e6,
    "metre": 1e6,
    "Å": 1e-4,
    "angstrom": 1e-4,
}
MAX_VOXEL_UM = 1e6  # 1 m: a larger voxel is a unit mistake (nm or mm typed as µm)
_BAND_BYTES = 256 * 2**20


def axis_named(name: str) -> Axis:
    """``name`` (a registry column, an option) as an :data:`Axis`.

    Raises:
        ValueError: ``name`` is not one of z, y, x.
    """
    for axis in AXES:
        if axis == name:
            return axis
    raise ValueError(f"axis {name!r} is not one of z, y, x")


def length_um(value: float, unit: str | None) -> float | None:
    """``value`` ``unit`` in µm, or None when the unit is missing or not a length
    ("pixel", "inch") or the value is not a finite length > 0."""
    factor = UM_PER_UNIT.get((unit or "").strip().lower())
    if factor is None or not value or not math.isfinite(value) or value <= 0:
        return None
    return float(value) * factor


def voxel_length_ok(value: float) -> bool:
    """Whether a voxel length (µm) is finite, > 0 and at most :data:`MAX_VOXEL_UM`."""
    return math.isfinite(value) and 0 < value <= MAX_VOXEL_UM


def chosen_voxel_size(given: VoxelSize | None, found: VoxelSize | None) -> VoxelSize | None:
    """The voxel size (z, y, x) µm a stack gets: ``given`` (an option) over ``found`` (the
    file's metadata); None when neither says.

    Raises:
        StackValidationError: the chosen size is not three lengths in (0, 1 m].
    """
    size = given if given is not None else found
    if size is None:
        return None
    if len(size) != 3 or not all(map(voxel_length_ok, size)):
        raise StackValidationError(
            f"voxel size {size} must be three finite lengths > 0 and ≤ {MAX_VOXEL_UM:g} µm (z,y,x)"
        )
    return (float(size[0]), float(size[1]), float(size[2]))


def native(dtype: np.dtype) -> np.dtype:
    """``dtype`` in this machine's byte order (what slices are handed out in)."""
    return dtype if dtype.isnative else dtype.newbyteorder("=")


def zyx_voxel_size(sizes: dict[str, float | None]) -> VoxelSize | None:
    """(z, y, x) µm from lengths by axis name; a missing z (a 2D image, or a file that
    states only the pixel size) is taken as x; a missing y or x gives None."""
    y, x = sizes.get("y"), sizes.get("x")
    if y is None or x is None:
        return None
    z = sizes.get("z")
    return (z if z is not None else x, y, x)


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 22) -> str:
    """sha256 (hex) of a file, or of the object at a URL (``s3://bucket/key``), read in
    4 MiB chunks."""
    digest = hashlib.sha256()
    remote = is_url(path)
    if remote:
        import fsspec  # only for a URL: every local file would pay its import
    with fsspec.open(os.fspath(path), "rb") if remote else open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class Reader(Protocol):
    """What a format gives a :class:`Stack`: voxels by (z, y, x) index, the files read."""

    def select(self, z: Index, y: Index, x: Index) -> np.ndarray:
        """The voxels at ``[z, y, x]`` (int or contiguous slice each; int axes dropped)."""
        ...

    def files(self) -> list[Path]:
        """Every file the stack's voxels come from, in a fixed order."""
        ...

    def close(self) -> None: ...


@contextmanager
def decoding(origin: Path, errors: tuple[type[BaseException], ...]) -> Iterator[None]:
    """Turn ``errors`` (what a format library raises on bad data) into one StackReadError."""
    try:
        yield
    except errors as exc:
        raise StackReadError(
            f"cannot decode data of {origin} ({exc}): the file is corrupt or truncated"
        ) from exc


@dataclass
class ArrayReader:
    """Reads an array-like (zarr array, h5py dataset, memmap, tifffile zarr store) whose
    stored axes have ``roles``: "z", "y", "x", or None for a singleton axis read at 0.

    Without a "z" role the array is one 2D image: a one-slice stack.
    """

    array: Any
    roles: tuple[str | None, ...]
    origin: Path
    errors: tuple[type[BaseException], ...]  # what the library raises on corrupt data
    members: Callable[[], list[Path]]
    closer: Callable[[], None] = lambda: None

    def select(self, z: Index, y: Index, x: Index) -> np.ndarray:
        picks = {"z": z, "y": y, "x": x}
        with decoding(self.origin, self.errors):
            out = np.asarray(
                self.array[tuple(0 if role is None else picks[role] for role in self.roles)]
            )
        if not out.dtype.isnative:
            out = out.astype(native(out.dtype))
        if "z" in self.roles:
            return out
        return out[np.newaxis][z if isinstance(z, slice) else 0]

    def files(self) -> list[Path]:
        return self.members()

    def close(self) -> None:
        self.closer()


@dataclass
class PlaneReader:
    """Reads a stack stored as one 2D plane per z (TIFF pages, a folder of slice files):
    ``plane(i)`` decodes plane ``i``; each plane is decoded once per call."""

    plane: Callable[[int], np.ndarray]
    shape: tuple[int, int, int]
    dtype: np.dtype
    origin: Path
    errors: tuple[type[BaseException], ...]  # what the library raises on corrupt data
    members: Callable[[], list[Path]]
    closer: Callable[[], None] = lambda: None

    def select(self, z: Index, y: Index, x: Index) -> np.ndarray:
        with decoding(self.origin, self.errors):
            if isinstance(z, int):
                return self.plane(z)[y, x]
            indices = range(*z.indices(self.shape[0]))
            cut_shape = np.empty(self.shape[1:], dtype=bool)[y, x].shape
            out = np.empty((len(indices), *cut_shape), dtype=self.dtype)
            for k, i in enumerate(indices):
                out[k] = self.plane(i)[y, x]
            return out

    def files(self) -> list[Path]:
        return self.members()

    def close(self) -> None:
        self.closer()


def array_roles(shape: Sequence[int], path: Path, what: str) -> tuple[str | None, ...]:
    """Roles of an unnamed array's axes: the last three are z, y, x (the last two y, x for
    a 2D image); leading axes must be singletons.

    Raises:
        StackReadError: the array is empty, 1D, or has a leading axis longer than 1.
    """
    shape = tuple(shape)
    if len(shape) < 2:
        raise StackReadError(
            f"{what} in {path} is {len(shape)}D {shape}; tomoloop reads 3D (z, y, x) "
            "volumes or 2D images: name the dataset that holds the volume"
        )
    if 0 in shape:
        raise StackReadError(f"{what} in {path} is empty (shape {shape}): it holds no voxels")
    spatial = min(3, len(shape))
    lead = shape[:-spatial]
    if any(n > 1 for n in lead):
        raise StackReadError(
            f"{what} in {path} is {len(shape)}D {shape}; tomoloop needs one channel and one "
            "time point (z, y, x): save the channel / time point you want as its own stack"
        )
    return (*([None] * len(lead)), *AXES[3 - spatial :])


def stack_shape(shape: Sequence[int], roles: Sequence[str | None]) -> tuple[int, int, int]:
    """(nz, ny, nx) of a stored array with axis ``roles``; 1 for a missing z."""
    size = {role: n for role, n in zip(roles, shape, strict=True) if role is not None}
    return (size.get("z", 1), size["y"], size["x"])


@dataclass
class Stack:
    """A lazily read 3D stack, axes (z, y, x).

    Attributes:
        path: the file (or folder, for slice folders and Zarr stores) the stack is in.
        shape: (nz, ny, nx) in voxels.
        dtype: NumPy dtype of the values handed out: the stored one, but uint8 (0/1) for
            a bool stack.
        voxel_size: (z, y, x) in µm, from metadata or given; None if unknown.
        source: what :func:`tomoloop.stacks.opener.open_stack` reopens this stack from,
            with an absolute path (``/d/scan.h5:/exchange/data``, ``/d/v.raw:8x64x64:uint16``).
    """

    path: Path
    shape: tuple[int, int, int]
    dtype: np.dtype
    voxel_size: VoxelSize | None
    source: str
    _reader: Reader = field(repr=False)
    _sha256: str | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.dtype == np.bool_:  # a binarized mask saved as such (seg > t): 0/1 uint8
            self.dtype = np.dtype(np.uint8)

    def _select(self, z: Index, y: Index, x: Index) -> np.ndarray:
        out = self._reader.select(z, y, x)
        return out.view(np.uint8) if out.dtype == np.bool_ else out

    def slice(self, axis: Axis, index: int) -> np.ndarray:
        """One 2D slice: axis "z" → (ny, nx), "y" → (nz, nx), "x" → (nz, ny)."""
        n = self.shape[AXES.index(axis)]
        if not 0 <= index < n:
            raise IndexError(f"{axis} index {index} outside 0..{n - 1} of {self.path.name}")
        full = slice(None)
        if axis == "z":
            return self._select(index, full, full)
        if axis == "y":
            return self._select(full, index, full)
        return self._select(full, full, index)

    def iter_slices(
        self, axis: Axis = "z", indices: Iterable[int] | None = None, band_bytes: int = _BAND_BYTES
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(index, slice)`` along ``axis``, reading at most ``band_bytes`` at a time.

        Along z one slice is read at a time. Along y or x every slice needs every z plane,
        so slices are read in bands of as many as fit in ``band_bytes``, decoding each
        plane once per band rather than once per slice.
        """
        order = AXES.index(axis)
        wanted = list(range(self.shape[order]) if indices is None else indices)
        if axis == "z":
            for i in wanted:
                yield i, self.slice("z", i)
            return
        plane_bytes = math.prod(s for k, s in enumerate(self.shape) if k != order)
        per_band = max(1, band_bytes // max(1, plane_bytes * self.dtype.itemsize))
        for start in range(0, len(wanted), per_band):
            chunk = wanted[start : start + per_band]
            lo, hi = min(chunk), max(chunk) + 1
            full = slice(None)
            band = (
                self._select(full, slice(lo, hi), full)
                if axis == "y"
                else self._select(full, full, slice(lo, hi))
            )
            for i in chunk:
                yield i, np.ascontiguousarray(np.take(band, i - lo, axis=order))

    def read(self) -> np.ndarray:
        """The whole volume (z, y, x). Only for volumes known to fit in memory."""
        full = slice(None)
        return self._select(full, full, full)

    def content_sha256(self) -> str:
        """sha256 (hex) naming this stack's content: the file's own sha256 for a whole file
        (a TIFF, local or at a URL), else a digest of every file read plus the dataset /
        layout in the source (two datasets of one HDF5 file, or two layouts of one raw file,
        differ). Read once per open stack: every later call returns the first digest.
        """
        if self._sha256 is None:
            self._sha256 = self._digest()
        return self._sha256

    def _digest(self) -> str:
        if is_url(self.source):  # a remote TIFF: the object's own sha256
            return file_sha256(self.source)
        files = self._reader.files()
        inner = self.source[len(str(self.path.absolute())) :]
        if files == [self.path] and not inner:
            return file_sha256(self.path)
        digest = hashlib.sha256(inner.encode())
        for member in files:
            name = member.relative_to(self.path).as_posix() if member != self.path else ""
            digest.update(f"{name}\0{file_sha256(member)}\n".encode())
        return digest.hexdigest()

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
