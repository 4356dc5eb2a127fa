"""Zarr (v2 and v3) and OME-Zarr (NGFF 0.4 / 0.5) stacks, read lazily (only the chunks a
slice touches).

Which array: the one the source names (``scan.zarr:/path/in/group``), the store itself if
it is an array, else level 0 of an OME-Zarr multiscale (``multiscales[0].datasets[0]``).
An OME-Zarr array's axes come from ``axes`` (space axes z, y, x; channel / time axes must
have length 1); its voxel size is the level's ``scale`` transformation (times the
multiscale's own, if any) in the axes' units. A plain array has no voxel size.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import zarr

from tomoloop.errors import StackReadError
from tomoloop.stacks.stack import (
    AXES,
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

_DECODE_ERRORS = (ValueError, OSError, RuntimeError)
_LISTED = 6  # candidate arrays named in an error


def open_zarr(path: Path, inner: str | None, voxel_size: VoxelSize | None = None) -> Stack:
    """Open the stack in a Zarr store (a folder) lazily.

    Args:
        path: the store's folder (an array or a group).
        inner: the array's path inside a group; None for the array itself or OME level 0.
        voxel_size: (z, y, x) in µm; overrides what the file says.

    Raises:
        StackReadError: not a readable Zarr store, no such array (the error lists those
            there are), an empty array, or channel / time axes longer than 1.
    """
    try:
        node = zarr.open(store=str(path), mode="r")
    except (ValueError, OSError, KeyError) as exc:
        raise StackReadError(
            f"{path} is not a readable Zarr store ({exc}): check the folder, or copy it again"
        ) from exc
    array, name, multiscale = _array(node, path, inner)
    level = _level(multiscale, name)
    roles = _ome_roles(multiscale, array.shape, path) if level else None
    if roles is None:
        roles = array_roles(array.shape, path, f"array {name or '/'}")
    found = _ome_voxel_size(multiscale, level, roles) if level else None
    return Stack(
        path=path,
        shape=stack_shape(array.shape, roles),
        dtype=native(array.dtype),
        voxel_size=chosen_voxel_size(voxel_size, found),
        source=f"{path.absolute()}:/{name}" if name else str(path.absolute()),
        _reader=ArrayReader(array, roles, path, _DECODE_ERRORS, lambda: _files(path)),
    )


def _array(node: Any, path: Path, inner: str | None) -> tuple[Any, str, Mapping | None]:
    """The array to read, its path in the store ("" for the store itself), and the
    group's multiscale metadata (None for a plain array or group)."""
    if isinstance(node, zarr.Array):
        if inner:
            raise StackReadError(
                f"{path} is a Zarr array, not a group: give the path alone, without ':{inner}'"
            )
        return node, "", None
    multiscale = multiscale_of(node.attrs)
    name = (inner or "").strip("/")
    if not name and multiscale is not None and multiscale.get("datasets"):
        name = str(multiscale["datasets"][0].get("path", ""))
    item = node.get(name) if name else None
    if isinstance(item, zarr.Array) and item.dtype.kind in "biuf":
        return item, name, multiscale
    arrays = sorted(
        key for key, member in node.members(max_depth=None) if isinstance(member, zarr.Array)
    )
    listed = ", ".join(f"/{a}" for a in arrays[:_LISTED]) + (", …" if len(arrays) > _LISTED else "")
    what = f"has no array /{name}" if name else "is a group with no OME-Zarr multiscales"
    hint = f"arrays in it: {listed}" if arrays else "it holds no arrays"
    raise StackReadError(f"{path} {what}; {hint}; name one as {path.name}:/path/to/array")


def multiscale_of(attrs: Mapping) -> Mapping | None:
    """The first OME-Zarr multiscale of a group's attributes (NGFF 0.5 nests it under
    ``ome``; 0.4 has it at the top), or None."""
    ome = attrs.get("ome")
    scales = (ome if isinstance(ome, Mapping) else attrs).get("multiscales")
    if isinstance(scales, list) and scales and isinstance(scales[0], Mapping):
        return scales[0]
    return None


def _level(multiscale: Mapping | None, name: str) -> Mapping | None:
    """The multiscale ``datasets`` entry for array ``name``, if it is one of its levels."""
    for level in (multiscale or {}).get("datasets", []):
        if isinstance(level, Mapping) and str(level.get("path", "")).strip("/") == name:
            return level
    return None


def _axes(multiscale: Mapping | None) -> list[Mapping]:
    axes = (multiscale or {}).get("axes", [])
    return [a if isinstance(a, Mapping) else {"name": str(a)} for a in axes]


def _ome_roles(
    multiscale: Mapping | None, shape: tuple[int, ...], path: Path
) -> tuple[str | None, ...] | None:
    """Roles of an OME-Zarr level's axes by name; None when the axes do not fit the shape.

    Raises:
        StackReadError: a channel, time or other non-space axis is longer than 1.
    """
    axes = _axes(multiscale)
    if len(axes) != len(shape):
        return None
    roles: list[str | None] = []
    for axis, n in zip(axes, shape, strict=True):
        name = str(axis.get("name", "")).lower()
        if name in AXES and axis.get("type", "space") == "space":
            roles.append(name)
        elif n == 1:
            roles.append(None)
        else:
            desc = ", ".join(f"{a.get('name')}={m}" for a, m in zip(axes, shape, strict=True))
            raise StackReadError(
                f"{path} is an OME-Zarr image with {desc}; tomoloop needs one channel and one "
                "time point: save the channel / time point you want as its own stack"
            )
    return tuple(roles) if "y" in roles and "x" in roles else None


def _scale(transforms: object, n: int) -> list[float]:
    """The product of the ``scale`` transformations in a list (ones when there are none)."""
    factors = [1.0] * n
    for t in transforms if isinstance(transforms, list) else []:
        if isinstance(t, Mapping) and t.get("type") == "scale" and len(t.get("scale", [])) == n:
            factors = [f * float(s) for f, s in zip(factors, t["scale"], strict=True)]
    return factors


def _ome_voxel_size(
    multiscale: Mapping | None, level: Mapping, roles: tuple[str | None, ...]
) -> VoxelSize | None:
    """(z, y, x) µm of one level; None unless y and x have a scale in a length unit."""
    axes = _axes(multiscale)
    n = len(roles)
    level_scale = _scale(level.get("coordinateTransformations"), n)
    whole = _scale((multiscale or {}).get("coordinateTransformations"), n)
    sizes = {
        role: length_um(s * w, axis.get("unit"))
        for role, axis, s, w in zip(roles, axes, level_scale, whole, strict=True)
        if role is not None
    }
    return zyx_voxel_size(sizes)


def _files(path: Path) -> list[Path]:
    """Every file of the store (metadata and chunks), sorted."""
    return sorted(p for p in path.rglob("*") if p.is_file())
