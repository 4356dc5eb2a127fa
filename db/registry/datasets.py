"""Dataset versions: immutable, content-hashed sets of annotations with a split."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import and_, exists, false, func, select

from tomoloop.db import entities
from tomoloop.db.entities import frozen, frozen_all
from tomoloop.db.models import (
    Annotation,
    DatasetMember,
    DatasetVersion,
    RoundItem,
    Slice,
    Volume,
)
from tomoloop.db.registry.annotations import _ranked_annotations
from tomoloop.db.registry.store import _CHUNK, _MAX_ID, RegistryError, Store
from tomoloop.db.states import (
    ItemState,
    Kind,
    PoolState,
)
from tomoloop.labels.tiers import Tier
from tomoloop.names import check_name


def _digest(content: object) -> str:
    """sha256 hex of ``content`` as JSON (keys sorted)."""
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class DatasetSlice:
    """One slice of a dataset version with what is needed to read its image and masks:
    its semantic label (annotation id, tier, mask) and, where a person drew one, its
    instance label's inline mask (``instances_rle``, :mod:`tomoloop.labels.masks` form)."""

    split: str
    annotation_id: int
    tier: int
    volume_id: int
    volume_path: str
    phases: str
    axis: str
    index: int
    mask_rle: dict | None
    mask_uri: str | None
    mask_sha256: str | None
    instances_rle: dict | None = None
    labelled_px: int | None = None


@dataclass(frozen=True)
class PoolSlice:
    """A slice of a dataset version's split as active learning sees it: ``state`` is
    ``labelled`` (a person labelled it), ``pending`` (waiting in an open round) or ``free``.
    """

    slice_id: int
    volume_id: int
    volume_path: str
    axis: str
    index: int
    state: str


def _count_key(kind: str, tier: int, empty: bool) -> str:
    """What a label counts as: its tier's name (``auto`` … ``expert``) for a semantic
    label, ``unlabelled`` for an empty one (0 labelled pixels: a slice nobody labelled
    yet), ``instances`` for an instance label of any tier."""
    if kind != Kind.SEMANTIC:
        return "instances"
    return "unlabelled" if empty else Tier(tier).name.lower()


class DatasetStore(Store):
    """Dataset versions."""

    def freeze_dataset(
        self, name: str, members: dict[str, Sequence[int]], artifacts: dict | None = None
    ) -> entities.DatasetVersion:
        """Freeze annotations (``{"train": [ids], "val": [...], "test": [...]}``) and the
        artifacts made from them (``{"coco": {"uri", "sha256"}, ...}``) as a version.

        The content hash covers the (split, annotation id) pairs; freezing the same pairs
        again returns the existing version (without ``artifacts``, whatever it holds). A
        new content becomes version n + 1 with the latest version as parent — also the same
        pairs with other ``artifacts`` (an export made with other options: training reads a
        version's artifacts), whose hash then covers the artifacts too.

        Raises:
            NameRuleError: ``name`` breaks :func:`tomoloop.names.check_name`'s rule.
        """
        check_name(name, "dataset name")
        pairs = sorted((split, int(a)) for split, ids in members.items() for a in ids)
        digest = _digest(pairs)
        with self.session() as s:
            same = s.scalars(
                select(DatasetVersion).where(
                    DatasetVersion.name == name,
                    DatasetVersion.content_hash.in_([digest, _digest([pairs, artifacts or {}])]),
                )
                .order_by(DatasetVersion.version)
            ).all()
            existing = next(
                (v for v in same if artifacts is None or (v.artifacts or {}) == artifacts), None
            )
            if existing is not None:
                return frozen(existing)
            if same:  # these members, frozen before with other artifacts
                digest = _digest([pairs, artifacts])
            latest = s.scalar(
                select(DatasetVersion)
                .where(DatasetVersion.name == name)
                .order_by(DatasetVersion.version.desc())
                .limit(1)
            )
            version = DatasetVersion(
                name=name,
                version=1 if latest is None else latest.version + 1,
                content_hash=digest,
                parent_id=None if latest is None else latest.id,
                artifacts=artifacts or {},
            )
            s.add(version)
            s.flush()
            rows = [
                {"dataset_version_id": version.id, "annotation_id": a, "split": split}
                for split, a in pairs
            ]
            for start in range(0, len(rows), _CHUNK):
                s.connection().execute(self._insert(DatasetMember), rows[start : start + _CHUNK])
        return frozen(version)

    def dataset(self, name: str, version: int | None = None) -> entities.DatasetVersion:
        """A dataset version by name (the latest unless ``version`` is given)."""
        query = select(DatasetVersion).where(DatasetVersion.name == name)
        if version is not None and not 0 < version <= _MAX_ID:
            query = query.where(false())  # no version holds it (and no driver overflows)
        query = (
            query.where(DatasetVersion.version == version)
            if version is not None
            else query.order_by(DatasetVersion.version.desc()).limit(1)
        )
        with self.session() as s:
            found = s.scalar(query)
        if found is None:
            raise RegistryError(
                f"no dataset {name if version is None else f'{name}@{version}'!r}: "
                "`tomoloop registry datasets` lists them; `tomoloop ingest` makes one"
            )
        return frozen(found)

    def dataset_version(self, dataset_version_id: int) -> entities.DatasetVersion:
        return self._get(DatasetVersion, dataset_version_id, "dataset version")

    def datasets(self) -> list[entities.DatasetVersion]:
        with self.session() as s:
            return frozen_all(
                s.scalars(
                    select(DatasetVersion).order_by(DatasetVersion.name, DatasetVersion.version)
                )
            )

    def dataset_counts(self, dataset_version_id: int) -> dict[str, dict[str, int]]:
        """Labels of a dataset version per split: semantic ones per tier, and instance
        labels (any tier) as ``instances`` when there are any: ``{split: {tier: n}}``.
        Slices nobody labelled yet (an empty label) count as ``unlabelled``.
        """
        counts: dict[str, dict[str, int]] = {}
        empty = func.coalesce(Annotation.labelled_px, -1) == 0
        with self.session() as s:
            for split, kind, tier, is_empty, n in s.execute(
                select(DatasetMember.split, Annotation.kind, Annotation.tier, empty, func.count())
                .join(Annotation, Annotation.id == DatasetMember.annotation_id)
                .where(DatasetMember.dataset_version_id == dataset_version_id)
                .group_by(DatasetMember.split, Annotation.kind, Annotation.tier, empty)
            ):
                key = _count_key(kind, tier, bool(is_empty))
                per_split = counts.setdefault(split, {})
                per_split[key] = per_split.get(key, 0) + n
        return counts

    def dataset_labelled_px(self, dataset_version_id: int) -> dict[str, int]:
        """Pixels the semantic labels of a dataset version label, per split (``{split: n}``;
        a dense label counts its whole slice, a sparse one its labelled region)."""
        with self.session() as s:
            return {
                split: int(n)
                for split, n in s.execute(
                    select(DatasetMember.split, func.coalesce(func.sum(Annotation.labelled_px), 0))
                    .join(Annotation, Annotation.id == DatasetMember.annotation_id)
                    .where(
                        DatasetMember.dataset_version_id == dataset_version_id,
                        Annotation.kind == Kind.SEMANTIC.value,
                    )
                    .group_by(DatasetMember.split)
                )
            }

    def dataset_members(self, dataset_version_id: int) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {"train": [], "val": [], "test": []}
        with self.session() as s:
            for annotation_id, split in s.execute(
                select(DatasetMember.annotation_id, DatasetMember.split)
                .where(DatasetMember.dataset_version_id == dataset_version_id)
                .order_by(DatasetMember.annotation_id)
            ):
                out[split].append(annotation_id)
        return out

    def volume_split(self, volume_id: int) -> dict[str, list[int]] | None:
        """The z indices of a volume's slices in each split of the newest dataset version
        that holds it (``{"train": [...], "val": [...], "test": [...]}``, each sorted; slices
        in no split are left out), or None when no dataset version holds it. A volume's
        slices keep their split in every dataset version after the first.
        """
        held = (
            select(DatasetMember.dataset_version_id, DatasetMember.split, Slice.index)
            .join(Annotation, Annotation.id == DatasetMember.annotation_id)
            .join(Slice, Slice.id == Annotation.slice_id)
            .where(Slice.volume_id == volume_id, Annotation.kind == Kind.SEMANTIC.value)
        )
        with self.session() as s:
            newest = s.scalar(select(func.max(held.subquery().c.dataset_version_id)))
            if newest is None:
                return None
            rows = s.execute(
                held.where(DatasetMember.dataset_version_id == newest).order_by(Slice.index)
            )
            out: dict[str, list[int]] = {"train": [], "val": [], "test": []}
            for _, split, index in rows:
                out[split].append(index)
        return out

    def dataset_slices(self, dataset_version_id: int) -> list[DatasetSlice]:
        """Every slice of a dataset version with its volume, its semantic label's mask and
        its instance label's (None where it has none), in split and annotation order.
        """
        drawn = (
            select(Annotation.slice_id, Annotation.mask_rle)
            .join(DatasetMember, DatasetMember.annotation_id == Annotation.id)
            .where(
                DatasetMember.dataset_version_id == dataset_version_id,
                Annotation.kind == Kind.INSTANCE.value,
            )
            .subquery()
        )
        query = (
            select(
                DatasetMember.split,
                Annotation.id,
                Annotation.tier,
                Volume.id,
                Volume.path,
                Volume.phases,
                Slice.axis,
                Slice.index,
                Annotation.mask_rle,
                Annotation.mask_uri,
                Annotation.mask_sha256,
                drawn.c.mask_rle,
                Annotation.labelled_px,
            )
            .join(Annotation, Annotation.id == DatasetMember.annotation_id)
            .join(Slice, Slice.id == Annotation.slice_id)
            .join(Volume, Volume.id == Slice.volume_id)
            .outerjoin(drawn, drawn.c.slice_id == Annotation.slice_id)
            .where(
                DatasetMember.dataset_version_id == dataset_version_id,
                Annotation.kind == Kind.SEMANTIC.value,
            )
            .order_by(DatasetMember.split, Annotation.id)
        )
        with self.session() as s:
            return [DatasetSlice(*row) for row in s.execute(query)]

    def pool(self, dataset_version_id: int, split: str = "train") -> list[PoolSlice]:
        """The slices of a version's split with their labelling state, in volume, axis and
        index order. Labels and rounds newer than the version count.
        """
        labelled = (
            exists()
            .where(
                and_(
                    Annotation.slice_id == Slice.id,
                    Annotation.tier >= Tier.ANNOTATOR,
                    Annotation.kind == Kind.SEMANTIC.value,
                )
            )
            .correlate(Slice)
        )
        pending = (
            exists()
            .where(and_(RoundItem.slice_id == Slice.id, RoundItem.state == ItemState.PENDING))
            .correlate(Slice)
        )
        query = (
            select(Slice.id, Volume.id, Volume.path, Slice.axis, Slice.index, labelled, pending)
            .join(Annotation, Annotation.slice_id == Slice.id)
            .join(DatasetMember, DatasetMember.annotation_id == Annotation.id)
            .join(Volume, Volume.id == Slice.volume_id)
            .where(
                DatasetMember.dataset_version_id == dataset_version_id,
                DatasetMember.split == split,
                Annotation.kind == Kind.SEMANTIC.value,
            )
            .order_by(Volume.id, Slice.axis, Slice.index)
        )
        with self.session() as s:
            return [
                PoolSlice(
                    slice_id,
                    volume_id,
                    path,
                    axis,
                    index,
                    PoolState.LABELLED
                    if is_labelled
                    else PoolState.PENDING
                    if is_pending
                    else PoolState.FREE,
                )
                for slice_id, volume_id, path, axis, index, is_labelled, is_pending in s.execute(
                    query
                )
            ]

    def refresh_dataset(self, name: str, artifacts: dict | None = None) -> entities.DatasetVersion:
        """A version of dataset ``name`` with the same slices and splits as its latest, each
        slice now with its best label of each kind (higher tiers supersede): its semantic
        label, and its instance label where a person drew one; the latest itself when
        nothing changed. ``artifacts``: the version's (default the latest's).
        """
        latest = self.dataset(name)
        ranked = (
            _ranked_annotations(Kind.SEMANTIC, Kind.INSTANCE)
            .where(
                Annotation.slice_id.in_(
                    select(Annotation.slice_id)
                    .join(DatasetMember, DatasetMember.annotation_id == Annotation.id)
                    .where(DatasetMember.dataset_version_id == latest.id)
                )
            )
            .subquery()
        )
        member = (
            select(Annotation.slice_id, DatasetMember.split)
            .join(DatasetMember, DatasetMember.annotation_id == Annotation.id)
            .where(
                DatasetMember.dataset_version_id == latest.id,
                Annotation.kind == Kind.SEMANTIC.value,
            )
            .subquery()
        )
        members: dict[str, list[int]] = {"train": [], "val": [], "test": []}
        with self.session() as s:
            for annotation_id, split in s.execute(
                select(ranked.c.id, member.c.split)
                .join(member, member.c.slice_id == ranked.c.slice_id)
                .where(ranked.c.rank == 1)
            ):
                members[split].append(annotation_id)
        return self.freeze_dataset(
            name, members, latest.artifacts if artifacts is None else artifacts
        )

    def dataset_volumes(self, dataset_version_id: int) -> list[entities.Volume]:
        """The volumes whose slices a dataset version holds, by id."""
        with self.session() as s:
            return frozen_all(
                s.scalars(
                    select(Volume)
                    .where(
                        Volume.id.in_(
                            select(Slice.volume_id)
                            .join(Annotation, Annotation.slice_id == Slice.id)
                            .join(DatasetMember, DatasetMember.annotation_id == Annotation.id)
                            .where(DatasetMember.dataset_version_id == dataset_version_id)
                        )
                    )
                    .order_by(Volume.id)
                )
            )

    def dataset_phases(self, dataset_version_id: int) -> str:
        """The phase map (``pore=0,nmc=1,cbd=2``) shared by every volume of a version."""
        with self.session() as s:
            found = list(
                s.scalars(
                    select(Volume.phases)
                    .distinct()
                    .join(Slice, Slice.volume_id == Volume.id)
                    .join(Annotation, Annotation.slice_id == Slice.id)
                    .join(DatasetMember, DatasetMember.annotation_id == Annotation.id)
                    .where(DatasetMember.dataset_version_id == dataset_version_id)
                )
            )
        if len(found) != 1:
            raise RegistryError(
                f"dataset version {dataset_version_id} has volumes with phase maps "
                f"{sorted(found)}: a semantic model needs exactly one set of classes"
            )
        return found[0]
