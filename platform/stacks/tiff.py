"""TIFF stacks: multipage TIFF, ImageJ hyperstack and OME-TIFF, read lazily; ImageJ /
OME-TIFF written atomically.

``slice`` decodes only the TIFF pages (or tiles) a slice needs: whole pages directly when
each holds one z plane, otherwise through tifffile's zarr store (zarr is imported only then:
importing it takes longer than reading a 256³ stack).
"""

from __future__ import annotations

import logging
import math
import os
import struct
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import tifffile

from tomoloop.errors import StackReadError
from tomoloop.outputs import temp_file_beside
from tomoloop.stacks.remote import RemoteFile
from tomoloop.stacks.stack import (
    ArrayReader,
    Index,
    PlaneReader,
    Reader,
    Stack,
    VoxelSize,
    chosen_voxel_size,
    length_um,
)

if TYPE_CHECKING:
    import zarr

_DEPTH_AXES = "ZIQ"  # tifffile's names for a z, generic image or unknown stacking axis
_FEW_CHANNELS = 4  # an ImageJ C axis this short may be real channels: reading it as z warns
_DECODE_ERRORS = (tifffile.TiffFileError, ValueError, OSError)


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
        size = length_um(float(raw), pixels.get(f"PhysicalSize{ax}Unit", "µm")) if raw else None
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
    x = length_um(xr[1] / xr[0], unit) if xr[0] else None
    y = length_um(yr[1] / yr[0], unit) if yr[0] else None
    if x is None or y is None:
        return None
    z = length_um(float(meta["spacing"]), unit) if "spacing" in meta else None
    return (z if z is not None else x, y, x)


def voxel_size_from_metadata(tif: tifffile.TiffFile) -> VoxelSize | None:
    """Voxel size (z, y, x) in µm from OME ``PhysicalSize*`` or ImageJ ``spacing``/resolution.

    Returns None when the file does not state it in a length unit.
    """
    if tif.is_ome and tif.ome_metadata:
        return _ome_voxel_size(tif.ome_metadata)
    if tif.is_imagej:
        return _imagej_voxel_size(tif)
    return None


def open_tiff(
    path: Path | RemoteFile, voxel_size: VoxelSize | None = None, source: str | None = None
) -> Stack:
    """Open a TIFF stack lazily.

    Args:
        path: an existing multipage TIFF, ImageJ hyperstack or OME-TIFF with one channel;
            or a remote one (:mod:`tomoloop.stacks.remote`), read in byte ranges as slices
            are asked for (``Stack.path`` is then ``bucket/key.tif``).
        voxel_size: (z, y, x) in µm; overrides what the file says.
        source: the source the registry keeps (default: the absolute path).

    Raises:
        StackReadError: the file is unreadable, corrupt, empty, or holds more than one
            channel / time point.
    """
    local = Path(path.path) if isinstance(path, RemoteFile) else path
    tif: tifffile.TiffFile | None = None
    with _tifffile_warnings() as warnings:
        try:
            # tifffile opens an object with .open() and closes it with the TIFF; its
            # hints name only paths and open files
            tif = tifffile.TiffFile(path)  # type: ignore[arg-type]
            series = tif.series  # parsing the page chain is where truncation shows
        except (tifffile.TiffFileError, ValueError, OSError, struct.error) as exc:
            warnings.append(str(exc))
    if warnings or tif is None:
        if tif is not None:
            tif.close()
        raise StackReadError(
            f"{local} is not a readable TIFF stack ({warnings[0]}): the file is corrupt or "
            "truncated; copy or re-export it from your reconstruction software"
        )
    tif.filehandle.set_lock(True)  # slices may be read from several threads
    try:
        return _stack_from(tif, series, local, voxel_size, source or str(local.absolute()))
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
    tif: tifffile.TiffFile, all_series: list, p: Path, voxel_size: VoxelSize | None, source: str
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
    if len(extra) == 1 and extra[0][0] == "S":
        raise StackReadError(
            f"{p} holds {extra[0][1]} colour samples per pixel ({axes} {shape}), not z slices; "
            "if they are slices (tifffile.imwrite stores a 3- or 4-slice array as RGB), "
            "write it with photometric='minisblack'"
        )
    if len(extra) > 1 or (extra and extra[0][0] not in _DEPTH_AXES):
        desc = ", ".join(f"{a}={n}" for a, n in extra)
        raise StackReadError(
            f"{p} is a hyperstack with {desc} ({axes} {shape}); tomoloop needs one channel "
            "and one time point: save the channel / time point you want as its own stack"
        )
    depth_axis, depth = extra[0] if extra else (None, 1)
    roles = (*tuple("z" if a == depth_axis else None for a in axes[:-2]), "y", "x")
    shape3 = (depth, shape[-2], shape[-1])
    dtype = np.dtype(series.dtype)
    reader = TiffReader(tif, p, roles, _pages_per_slice(series, depth, shape[-2:]), shape3, dtype)
    return Stack(
        path=p,
        shape=shape3,
        dtype=dtype,
        voxel_size=chosen_voxel_size(voxel_size, voxel_size_from_metadata(tif)),
        source=source,
        _reader=reader,
    )


class TiffReader:
    """Reads a TIFF series: whole pages when each is one z plane (``pages``), otherwise
    through tifffile's zarr store (opened when first needed; zarr is slow to import).
    """

    def __init__(
        self,
        tif: tifffile.TiffFile,
        origin: Path,
        roles: tuple[str | None, ...],
        pages: list | None,
        shape: tuple[int, int, int],
        dtype: np.dtype,
    ) -> None:
        self.tif, self.origin, self.roles, self.pages = tif, origin, roles, pages
        self.shape, self.dtype = shape, dtype
        self._inner: Reader | None = None if pages is not None else self._zarr_reader()

    def _reader(self) -> Reader:
        if self._inner is None:
            self._inner = self._page_reader() if self.pages is not None else self._zarr_reader()
        return self._inner

    def _page_reader(self) -> Reader:
        pages, plane = self.pages or [], self.shape[1:]
        return PlaneReader(
            lambda i: pages[i].asarray().reshape(plane),
            self.shape,
            self.dtype,
            self.origin,
            _DECODE_ERRORS,
            self.files,
        )

    def _zarr_reader(self) -> Reader:
        array = _zarr_array(self.tif.series[0], self.origin)
        return ArrayReader(array, self.roles, self.origin, _DECODE_ERRORS, self.files)

    def select(self, z: Index, y: Index, x: Index) -> np.ndarray:
        return self._reader().select(z, y, x)

    def files(self) -> list[Path]:
        return [self.origin]

    def close(self) -> None:
        self.tif.close()


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
