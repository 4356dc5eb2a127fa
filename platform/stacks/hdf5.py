"""HDF5 / NeXus stacks, read lazily through h5py (only the chunks a slice touches).

Which dataset: the one the source names (``scan.h5:/entry/data/data``), else the Data
Exchange volume ``/exchange/data``, else the NeXus default plot (``@default`` down to an
NXdata group's ``@signal``). Voxel size, first found of: the dataset's ``element_size_um``
attribute (z, y, x µm; Fiji, ilastik), the NeXus axes of its NXdata group (evenly spaced
coordinates with ``@units``), the Data Exchange
``/measurement/instrument/detection_system/objective/resolution`` (with ``@units``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np

from tomoloop.errors import StackReadError
from tomoloop.stacks.stack import (
    ArrayReader,
    Stack,
    VoxelSize,
    array_roles,
    chosen_voxel_size,
    length_um,
    native,
    stack_shape,
    zyx_voxel_size,
)

DATA_EXCHANGE = "/exchange/data"
DX_RESOLUTION = "/measurement/instrument/detection_system/objective/resolution"
_LISTED = 6  # candidate datasets named in an error


def open_hdf5(path: Path, inner: str | None, voxel_size: VoxelSize | None = None) -> Stack:
    """Open the stack in an existing HDF5 / NeXus file lazily.

    Args:
        path: the HDF5 file.
        inner: the dataset path inside it; None for the Data Exchange / NeXus default.
        voxel_size: (z, y, x) in µm; overrides what the file says.

    Raises:
        StackReadError: not a readable HDF5 file, no such dataset (the error lists the
            datasets that could be a stack), an empty or not 2D/3D dataset.
    """
    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:
        raise StackReadError(
            f"{path} is not a readable HDF5 file ({exc}): the file is corrupt or truncated; "
            "copy or re-export it"
        ) from exc
    try:
        dataset = _dataset(h5, path, inner)
        roles = array_roles(dataset.shape, path, f"dataset {dataset.name}")
        found = _voxel_size(h5, dataset, roles)
        reader = ArrayReader(dataset, roles, path, (OSError,), lambda: [path], h5.close)
        return Stack(
            path=path,
            shape=stack_shape(dataset.shape, roles),
            dtype=native(dataset.dtype),
            voxel_size=chosen_voxel_size(voxel_size, found),
            source=f"{path.absolute()}:{dataset.name}",
            _reader=reader,
        )
    except Exception:
        h5.close()
        raise


def _dataset(h5: h5py.File, path: Path, inner: str | None) -> h5py.Dataset:
    name = inner if inner is not None else _default_name(h5)
    item = h5.get(name) if name else None
    if isinstance(item, h5py.Dataset) and item.dtype.kind in "biuf":
        return item
    if name is None:
        what = f"has no {DATA_EXCHANGE} and no NeXus default"
    elif item is None:
        what = f"has no dataset {name}"
    else:
        what = f"has {name}, which is not a numeric dataset"
    found = _candidates(h5)
    listed = ", ".join(found[:_LISTED]) + (", …" if len(found) > _LISTED else "")
    hint = f"datasets that could be the stack: {listed}" if found else "it holds no 2D/3D data"
    raise StackReadError(f"{path} {what}; {hint}; name one as {path.name}:/path/to/dataset")


def _default_name(h5: h5py.File) -> str | None:
    """``/exchange/data`` if present, else the NeXus default signal, else None."""
    if DATA_EXCHANGE in h5:
        return DATA_EXCHANGE
    group: Any = h5
    for _ in range(3):  # root → NXentry → NXdata, each through @default
        child = _text(group.attrs.get("default"))
        if child is None or child not in group:
            break
        group = group[child]
    signal = _text(group.attrs.get("signal")) if isinstance(group, h5py.Group) else None
    return f"{group.name.rstrip('/')}/{signal}" if signal and group is not h5 else None


def _candidates(h5: h5py.File) -> list[str]:
    names: list[str] = []

    def visit(name: str, item: object) -> None:
        if isinstance(item, h5py.Dataset) and item.ndim >= 2 and item.dtype.kind in "biuf":
            names.append("/" + name)

    h5.visititems(visit)
    return sorted(names, key=lambda n: (n.count("/"), n))


def _text(value: object) -> str | None:
    """An HDF5 string attribute (str, bytes, or a one-element array of either) as str."""
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.ravel()[0]
    if isinstance(value, bytes):
        return value.decode()
    return value if isinstance(value, str) else None


def _voxel_size(
    h5: h5py.File, dataset: h5py.Dataset, roles: tuple[str | None, ...]
) -> VoxelSize | None:
    for size in (
        _element_size(dataset, roles),
        _nexus_axes_size(dataset, roles),
        _dx_resolution(h5) if dataset.name.startswith("/exchange/") else None,
    ):
        if size is not None:
            return size
    return None


def _element_size(dataset: h5py.Dataset, roles: tuple[str | None, ...]) -> VoxelSize | None:
    """``element_size_um``: one µm length per spatial axis, in stored order."""
    value = dataset.attrs.get("element_size_um")
    if value is None:
        return None
    lengths = np.atleast_1d(np.asarray(value, dtype=float))
    spatial = [r for r in roles if r is not None]
    if lengths.size != len(spatial):
        return None
    return zyx_voxel_size(
        {r: length_um(float(v), "um") for r, v in zip(spatial, lengths.tolist(), strict=True)}
    )


def _nexus_axes_size(dataset: h5py.Dataset, roles: tuple[str | None, ...]) -> VoxelSize | None:
    """Spacing of the NeXus axis coordinates of the NXdata group whose signal is
    ``dataset`` (evenly spaced, with a length ``@units``)."""
    group = dataset.parent
    if _text(group.attrs.get("signal")) != dataset.name.rsplit("/", 1)[-1]:
        return None
    axes = _axis_names(group.attrs.get("axes"))
    if len(axes) != len(roles):
        return None
    sizes: dict[str, float | None] = {}
    for role, axis, n in zip(roles, axes, dataset.shape, strict=True):
        if role is not None:
            sizes[role] = _spacing(group.get(axis), n) if axis != "." else None
    return zyx_voxel_size(sizes)


def _axis_names(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str | bytes):
        text = _text(value) or ""
        return text.split(":") if ":" in text else [text]
    return [_text(v) or "." for v in np.asarray(value).ravel()]


def _spacing(axis: object, n: int) -> float | None:
    """Step (µm) of evenly spaced 1D coordinates of length ``n`` with length units."""
    if not isinstance(axis, h5py.Dataset) or axis.shape != (n,) or n < 2:
        return None
    values = np.asarray(axis[()], dtype=float)
    steps = np.diff(values)
    step = float(abs(steps.mean()))
    if not np.allclose(np.abs(steps), step, rtol=1e-6, atol=0):
        return None
    return length_um(step, _text(axis.attrs.get("units")))


def _dx_resolution(h5: h5py.File) -> VoxelSize | None:
    """Data Exchange pixel resolution (isotropic), when stored with length units."""
    item = h5.get(DX_RESOLUTION)
    if not isinstance(item, h5py.Dataset) or item.size != 1:
        return None
    size = length_um(float(np.asarray(item[()]).ravel()[0]), _text(item.attrs.get("units")))
    return None if size is None else (size, size, size)
