"""Volumes (CT / FIB-SEM stacks) and their slices."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import select

from tomoloop.db import entities
from tomoloop.db.entities import frozen
from tomoloop.db.models import (
    Slice,
    Volume,
)
from tomoloop.db.registry.store import _CHUNK, RegistryError, Store
from tomoloop.names import check_name


class VolumeStore(Store):
    """Volumes and slices."""

    def register_volume(
        self,
        name: str,
        path: str,
        sha256: str,
        shape: Sequence[int],
        dtype: str,
        phases: str,
        voxel_size: Sequence[float] | None = None,
        modality: str = "xct",
        material: str = "",
    ) -> int:
        """Id of the volume with this sha256, registering it if new (idempotent).

        Raises:
            NameRuleError: ``name`` breaks :func:`tomoloop.names.check_name`'s rule.
            RegistryError: ``name`` is taken by a volume with other content, or the volume
                is registered with other ``phases`` (its labels would be read by the wrong
                map).
        """
        check_name(name, "volume name")
        vz, vy, vx = voxel_size if voxel_size is not None else (None, None, None)
        row = {
            "name": name,
            "path": path,
            "sha256": sha256,
            "shape_z": shape[0],
            "shape_y": shape[1],
            "shape_x": shape[2],
            "dtype": dtype,
            "phases": phases,
            "voxel_z_um": vz,
            "voxel_y_um": vy,
            "voxel_x_um": vx,
            "modality": modality,
            "material": material,
        }
        with self.session() as s:
            s.execute(self._insert(Volume).values(**row).on_conflict_do_nothing())
            found = s.execute(
                select(Volume.id, Volume.sha256, Volume.name, Volume.phases).where(
                    (Volume.sha256 == sha256) | (Volume.name == name)
                )
            ).all()
        for volume_id, found_sha, found_name, found_phases in found:
            if found_sha != sha256:
                continue
            if found_phases != phases:
                raise RegistryError(
                    f"volume {found_name!r} (this stack) is registered with --phases "
                    f"{found_phases}, not {phases}: a volume keeps one phase map; ingest its "
                    f"labels with --phases {found_phases}"
                )
            return volume_id
        raise RegistryError(
            f"volume name {name!r} is already used by another stack ({found[0][1][:12]}…): "
            "choose another --name"
        )

    def volume(self, volume_id: int) -> entities.Volume:
        return self._get(Volume, volume_id, "volume")

    def volume_named(self, name: str) -> entities.Volume:
        with self.session() as s:
            found = s.scalar(select(Volume).where(Volume.name == name))
        if found is None:
            raise RegistryError(f"no volume named {name!r}: see `tomoloop registry volumes`")
        return frozen(found)

    def volumes(self) -> list[entities.Volume]:
        with self.session() as s:
            return [frozen(v) for v in s.scalars(select(Volume).order_by(Volume.id))]

    def register_slices(self, volume_id: int, axis: str, indices: Iterable[int]) -> dict[int, int]:
        """Slice ids for ``indices`` along ``axis`` of a volume, creating missing ones."""
        wanted = sorted(set(indices))
        rows = [{"volume_id": volume_id, "axis": axis, "index": i} for i in wanted]
        with self.session() as s:
            for start in range(0, len(rows), _CHUNK):
                s.connection().execute(
                    self._insert(Slice).on_conflict_do_nothing(), rows[start : start + _CHUNK]
                )
            found = s.execute(
                select(Slice.index, Slice.id).where(
                    Slice.volume_id == volume_id, Slice.axis == axis
                )
            ).all()
        ids = dict(found)
        return {i: ids[i] for i in wanted}

    def slice_volumes(
        self, slice_ids: Iterable[int]
    ) -> dict[int, tuple[entities.Slice, entities.Volume]]:
        """``{slice id: (slice, its volume)}`` for the given ids."""
        wanted = list(slice_ids)
        out: dict[int, tuple[entities.Slice, entities.Volume]] = {}
        with self.session() as s:
            for start in range(0, len(wanted), _CHUNK):
                for slice_, volume in s.execute(
                    select(Slice, Volume)
                    .join(Volume, Volume.id == Slice.volume_id)
                    .where(Slice.id.in_(wanted[start : start + _CHUNK]))
                ):
                    out[slice_.id] = (frozen(slice_), frozen(volume))
        missing = set(wanted) - set(out)
        if missing:
            raise RegistryError(f"no slices with ids {sorted(missing)[:10]}")
        return out
