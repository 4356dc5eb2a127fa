"""Lazy reading of grayscale and label stacks (multipage TIFF, ImageJ hyperstack, OME-TIFF).

A :class:`Stack` is a 3D volume with axes ``(z, y, x)``. It never holds the whole volume:
``slice`` decodes only the TIFF pages (or tiles) a slice needs: whole pages directly when
each holds one z plane, otherwise through tifffile's zarr store (zarr is imported only then:
importing it takes longer than reading a 256³ stack). Voxel sizes are in micrometres,
ordered ``(z, y, x)``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import struct
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import tifffile

from tomoloop.errors import StackReadError, StackValidationError
from tomoloop.outputs import temp_file_beside
from tomoloop.stacks.remote import RemoteFile, is_url, open_remote

if TYPE_CHECKING:
    import zarr

Axis = Literal["z", "y", "x"]
AXES: tuple[Axis, ...] = ("z", "y", "x")
VoxelSize = tuple[float, float, float]


def axis_named(name: str) -> Axis:
    """``name`` (a registry column, an option) as an :data:`Axis`.

    Raises:
        ValueError: ``name`` is not one of z, y, x.
    """
    for axis in AXES:
        if axis == name:
            return axis
    raise ValueError(f"axis {name!r} is not one of z, y, x")

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
    "mm": 1e3,
    "cm": 1e4,
    "m": 1e6,
    "Å": 1e-4,
    "angstrom": 1e-4,
}
MAX_VOXEL_UM = 1e6  # 1 m: a larger voxel is a unit mistake (nm or mm typed as µm)
_DEPTH_AXES = "ZIQ"  # tifffile's names for a z, generic image or unknown stacking axis
_FEW_CHANNELS = 4  # an ImageJ C axis this short may be real channels: reading it as z warns
_BAND_BYTES = 256 * 2**20


def _um(value: float, unit: str | None) -> float | None:
    """Length in µm, or None when the unit is missing or not a length ("pixel", "inch")."""
    factor = UM_PER_UNIT.get((unit or "").strip().lower())
    if factor is None or not value or not math.isfinite(value) or value <= 0:
        return None
    return float(value) * factor


def _ome_voxel_size(xml: str) -> VoxelSize | None:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    pixels = next((e for e in root.iter() if e.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None:
        return None
    sizes = []
    for ax in "ZYX":
        raw = pixels.get(f"PhysicalSize{ax}")
        size = _um(float(raw), pixels.get(f"PhysicalSize{ax}Unit", "µm")) if raw else None
        sizes.append(size)
    if sizes[1] is None or sizes[2] is None:
        return None
    return (sizes[0] if sizes[0] is not None else sizes[2], sizes[1], sizes[2])


def _imagej_voxel_size(tif: tifffile.TiffFile) -> VoxelSize | None:
    meta = tif.imagej_metadata or {}
    unit = meta.get("unit")
    page = tif.pages.first
    try:
        xr = page.tags["XResolution"].value
        yr = page.tags["YResolution"].value
    except KeyError:
        return None
    x = _um(xr[1] / xr[0], unit) if xr[0] else None
    y = _um(yr[1] / yr[0], unit) if yr[0] else None
    if x is None or y is None:
        return None
    z = _um(float(meta["spacing"]), unit) if "spacing" in meta else None
    return (z if z is not None else x, y, x)


def voxel_length_ok(value: float) -> bool:
    """Whether a voxel length (µm) is finite, > 0 and at most :data:`MAX_VOXEL_UM`."""
    return math.isfinite(value) and 0 < value <= MAX_VOXEL_UM


def voxel_size_from_metadata(tif: tifffile.TiffFile) -> VoxelSize | None:
    """Voxel size (z, y, x) in µm from OME ``PhysicalSize*`` or ImageJ ``spacing``/resolution.

    Returns None when the file does not state it in a length unit.
    """
    if tif.is_ome and tif.ome_metadata:
        return _ome_voxel_size(tif.ome_metadata)
    if tif.is_imagej:
        return _imagej_voxel_size(tif)
    return None


@dataclass
class Stack:
    """A lazily read 3D stack, axes (z, y, x).

    Attributes:
        path: the TIFF file.
        shape: (nz, ny, nx) in voxels.
        dtype: NumPy dtype of the stored values.
        voxel_size: (z, y, x) in µm, from metadata or given; None if unknown.
    """

    path: Path
    shape: tuple[int, int, int]
    dtype: np.dtype
    voxel_size: VoxelSize | None
    _tif: tifffile.TiffFile = field(repr=False)
    _array: zarr.Array | None = field(repr=False)  # opened when first needed (not ``_pages``)
    _roles: tuple[str | None, ...] = field(repr=False)  # per stored axis: "z"/"y"/"x", None = 0
    _pages: list | None = field(repr=False, default=None)  # one 2D TIFF page per z, if so

    def _select(self, z: int | slice, y: int | slice, x: int | slice) -> np.ndarray:
        try:
            if self._pages is not None:
                return self._select_pages(self._pages, z, y, x)
            if self._array is None:
                self._array = _zarr_array(self._tif.series[0], self.path)
            picks = {"z": z, "y": y, "x": x}
            out = np.asarray(
                self._array[tuple(0 if role is None else picks[role] for role in self._roles)]
            )
        except (tifffile.TiffFileError, ValueError, OSError) as exc:
            raise StackReadError(
                f"cannot decode data of {self.path} ({exc}): the file is corrupt or truncated"
            ) from exc
        if "z" in self._roles:
            return out
        return out[np.newaxis][z if isinstance(z, slice) else 0]  # a single 2D image

    def _select_pages(
        self, pages: list, z: int | slice, y: int | slice, x: int | slice
    ) -> np.ndarray:
        """Fast path: decode whole pages (each once) and cut them; no zarr machinery."""
        if isinstance(z, int):
            return pages[z].asarray().reshape(self.shape[1:])[y, x]
        indices = range(*z.indices(self.shape[0]))
        cut_shape = np.empty(self.shape[1:], dtype=bool)[y, x].shape
        out = np.empty((len(indices), *cut_shape), dtype=self.dtype)
        for k, i in enumerate(indices):
            out[k] = pages[i].asarray().reshape(self.shape[1:])[y, x]
        return out

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

        Along z one slice is read at a time. Along y or x every slice needs every z page, so
        slices are read in bands of as many as fit in ``band_bytes``, decoding each page
        once per band rather than once per slice.
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

    def close(self) -> None:
        self._tif.close()

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_stack(path: str | os.PathLike[str], voxel_size: VoxelSize | None = None) -> Stack:
    """Open a TIFF stack lazily.

    Args:
        path: multipage TIFF, ImageJ hyperstack or OME-TIFF holding one channel; or its
            URL (``s3://bucket/key.tif``), read in byte ranges as slices are asked for
            (:mod:`tomoloop.stacks.remote`; ``Stack.path`` is then ``bucket/key.tif``).
        voxel_size: (z, y, x) in µm; overrides what the file says.

    Raises:
        StackReadError: the file is missing, unreadable, corrupt, empty, or holds more than
            one channel / time point.
    """
    source: Path | RemoteFile
    if is_url(path):
        source = open_remote(os.fspath(path))
        p = Path(source.path)
    else:
        source = p = Path(path)
        if not p.is_file():
            raise StackReadError(f"stack {p} does not exist: check the path")
    tif: tifffile.TiffFile | None = None
    with _tifffile_warnings() as warnings:
        try:
            # tifffile opens an object with .open() and closes it with the TIFF; its
            # hints name only paths and open files
            tif = tifffile.TiffFile(source)  # type: ignore[arg-type]
            series = tif.series  # parsing the page chain is where truncation shows
        except (tifffile.TiffFileError, ValueError, OSError, struct.error) as exc:
            warnings.append(str(exc))
    if warnings or tif is None:
        if tif is not None:
            tif.close()
        raise StackReadError(
            f"{p} is not a readable TIFF stack ({warnings[0]}): the file is corrupt or "
            "truncated; copy or re-export it from your reconstruction software"
        )
    tif.filehandle.set_lock(True)  # slices may be read from several threads
    try:
        return _stack_from(tif, series, p, voxel_size)
    except Exception:
        tif.close()
        raise


@contextmanager
def _tifffile_warnings() -> Iterator[list[str]]:
    """Collect what tifffile logs at WARNING or above (it logs, not raises, on bad offsets)."""
    messages: list[str] = []
    log = logging.getLogger("tifffile")
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: messages.append(record.getMessage())  # type: ignore[method-assign]
    log.addHandler(handler)
    propagate, log.propagate = log.propagate, False
    try:
        yield messages
    finally:
        log.removeHandler(handler)
        log.propagate = propagate


def _stack_from(
    tif: tifffile.TiffFile, all_series: list, p: Path, voxel_size: VoxelSize | None
) -> Stack:
    if not all_series:
        raise StackReadError(f"{p} holds no images: it is empty")
    series = all_series[0]
    axes, shape = series.axes, tuple(series.shape)
    if 0 in shape:
        raise StackReadError(f"{p} is empty (shape {shape}): it holds no voxels")
    if axes[-2:] != "YX":
        raise StackReadError(
            f"{p} has axes {axes} {shape}; tomoloop reads grayscale z-stacks whose slices are "
            "YX planes: convert RGB or interleaved data to one channel first"
        )
    extra = [(a, n) for a, n in zip(axes[:-2], shape[:-2], strict=True) if n > 1]
    if len(extra) == 1 and extra[0][0] == "C" and _channels_are_slices(tif, p, extra[0][1]):
        axes = axes.replace("C", "Z")
        extra = [("Z", extra[0][1])]
    if len(extra) > 1 or (extra and extra[0][0] not in _DEPTH_AXES):
        desc = ", ".join(f"{a}={n}" for a, n in extra)
        raise StackReadError(
            f"{p} is a hyperstack with {desc} ({axes} {shape}); tomoloop needs one channel "
            "and one time point: save the channel / time point you want as its own stack"
        )
    depth_axis, depth = extra[0] if extra else (None, 1)
    roles = (*tuple("z" if a == depth_axis else None for a in axes[:-2]), "y", "x")
    pages = _pages_per_slice(series, depth, shape[-2:])
    array = _zarr_array(series, p) if pages is None else None
    size = voxel_size if voxel_size is not None else voxel_size_from_metadata(tif)
    if size is not None and (len(size) != 3 or not all(map(voxel_length_ok, size))):
        raise StackValidationError(
            f"voxel size {size} must be three finite lengths > 0 and ≤ {MAX_VOXEL_UM:g} µm (z,y,x)"
        )
    return Stack(
        path=p,
        shape=(depth, shape[-2], shape[-1]),
        dtype=np.dtype(series.dtype),
        voxel_size=None if size is None else (float(size[0]), float(size[1]), float(size[2])),
        _tif=tif,
        _array=array,
        _roles=roles,
        _pages=pages,
    )


def _zarr_array(series: tifffile.TiffPageSeries, p: Path) -> zarr.Array:
    """The series as a read-only zarr array (tiles and multi-plane pages read lazily)."""
    import zarr

    try:
        return zarr.open_array(series.aszarr(), mode="r")
    except Exception as exc:
        raise StackReadError(f"cannot decode {p} ({exc}): the file may be corrupt") from exc


def _channels_are_slices(tif: tifffile.TiffFile, p: Path, channels: int) -> bool:
    """Whether an ImageJ file's only stacking axis, C, holds z slices.

    A 3D array saved as ImageJ without axes metadata (``tifffile.imwrite(..., imagej=True)``)
    is labelled C=n, mode grayscale; every tomography writer means z. A real multichannel
    image is shown in colour (mode composite or color, or channel LUTs): that stays C and
    is refused. Up to :data:`_FEW_CHANNELS` planes could be either, so reading them as z
    is said in a warning.
    """
    meta = tif.imagej_metadata or {}
    if not tif.is_imagej or meta.get("mode", "grayscale") != "grayscale" or "LUTs" in meta:
        return False
    if channels <= _FEW_CHANNELS:
        logging.getLogger(__name__).warning(
            "%s: reading its %d ImageJ channels as z slices (no axes in the file); if they "
            "are channels, save the one you want as its own stack",
            p,
            channels,
        )
    return True


def _pages_per_slice(series: tifffile.TiffPageSeries, depth: int, plane: tuple) -> list | None:
    """The series' pages when they are exactly one (y, x) plane per z slice, else None.

    True of ordinary multipage, ImageJ (< 4 GB) and OME z-stacks. Others (ImageJ files
    with a single IFD for > 4 GB of contiguous data, tiled multi-plane pages) are read
    through tifffile's zarr store instead.
    """
    pages = [p for p in series.pages if p is not None]
    if len(series.pages) != depth or len(pages) != depth:
        return None
    return (
        pages
        if tuple(pages[0].shape[-2:]) == tuple(plane)
        and math.prod(pages[0].shape) == math.prod(plane)
        else None
    )


# ---------------------------------------------------------------- display windowing


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


# ---------------------------------------------------------------- validation


def check_same_shape(gray: Stack, labels: Stack) -> None:
    """Raise StackValidationError unless the grayscale and label stacks have one shape."""
    if gray.shape != labels.shape:
        raise StackValidationError(
            f"grayscale {gray.path.name} is {gray.shape} (z,y,x) but labels {labels.path.name} "
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


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 22) -> str:
    """sha256 (hex) of a file, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------- writing


def write_stack(
    path: str | os.PathLike[str], volume: np.ndarray, voxel_size: VoxelSize | None = None
) -> Path:
    """Write a (z, y, x) volume as an ImageJ multipage TIFF, atomically (temp file + rename).

    The voxel size (µm) goes into ImageJ ``spacing``/resolution, where :func:`open_stack`
    reads it back.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    imagej = volume.dtype in (np.uint8, np.uint16, np.float32)
    metadata: dict = {"axes": "ZYX"}
    kwargs: dict = {"imagej": imagej, "ome": not imagej, "metadata": metadata}
    if voxel_size is not None:
        z, y, x = voxel_size
        kwargs["resolution"] = (1.0 / x, 1.0 / y)
        if imagej:
            metadata.update(spacing=z, unit="um")
        else:
            metadata.update(PhysicalSizeX=x, PhysicalSizeY=y, PhysicalSizeZ=z)
    tmp = temp_file_beside(p)
    try:
        tifffile.imwrite(tmp, volume, **kwargs)
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return p
