"""The registry's one store class (in the manner of MLflow's SQLAlchemy store).

Every public method is one transaction: it commits whole or not at all. Writes that
several processes may race on (a volume, a slice, an annotation, a dataset version, a
promotion) are idempotent by natural key and settled by the database's unique
constraints, not by reading first.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import orjson
from psycopg.errors import UniqueViolation
from sqlalchemy import Engine, and_, exists, false, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from tomoloop.active.review import AGREEMENT_KINDS
from tomoloop.db.engine import make_engine, schema_at_head, sqlite_file
from tomoloop.db.models import (
    Agreement,
    ALRound,
    Annotation,
    DatasetMember,
    DatasetVersion,
    LabelStudioEvent,
    Metric,
    ModelVersion,
    Review,
    RoundItem,
    Slice,
    SliceScore,
    TrainingRun,
    Volume,
    utcnow,
)
from tomoloop.db.states import (
    ItemState,
    Kind,
    PoolState,
    ReviewState,
    RoundStatus,
    RunStatus,
    Stage,
)
from tomoloop.errors import TomoloopError
from tomoloop.labels.masks import labelled_pixels
from tomoloop.labels.tiers import Tier
from tomoloop.names import check_name
from tomoloop.processes import ProcessId

_CHUNK = 5_000  # rows per bulk statement (stays under SQLite's bound-parameter limit)
_MAX_ID = 2**63 - 1  # the largest id (and version) either backend can store


# every column holding an artifact key (DatasetVersion.artifacts holds them in a JSON map)
ARTIFACT_KEY_COLUMNS = (Annotation.mask_uri, ModelVersion.checkpoint_uri, TrainingRun.curve_uri)

_LISTINGS = {
    "volume": "volumes",
    "active-learning round": "rounds",
    "dataset version": "datasets",
    "model version": "models",
}


class RegistryError(TomoloopError):
    """A registry request that cannot be met (unknown id, name clash, ...)."""


@dataclass(frozen=True)
class NewAnnotation:
    """An annotation to add. See :class:`tomoloop.db.models.Annotation` for the fields.

    ``labelled_px`` is computed from an inline semantic mask; a semantic mask stored as a
    file must bring it (:func:`tomoloop.labels.masks.labelled_pixels` of the document).
    """

    slice_id: int
    tier: Tier
    source: str
    mask_uri: str | None = None
    mask_sha256: str | None = None
    mask_rle: dict | None = None
    model_version_id: int | None = None
    ls_task_id: int | None = None
    ls_annotation_id: int | None = None
    author: str = ""
    lead_time_s: float | None = None
    kind: Kind = Kind.SEMANTIC
    labelled_px: int | None = None


@dataclass(frozen=True)
class NewMetric:
    name: str
    value: float
    split: str = "test"
    class_name: str = ""
    step: int | None = None
    dataset_version_id: int | None = None


@dataclass(frozen=True)
class Lineage:
    """Where a model came from: its ancestors, training data and the volumes beneath."""

    model_id: int
    ancestors: list[int]  # parent, grandparent, ...
    dataset_version_id: int | None
    annotations_by_tier: dict[str, int] = field(default_factory=dict)
    volume_ids: list[int] = field(default_factory=list)
    labelled_px: int = 0  # pixels the dataset version's semantic labels label


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


_ANNOTATION_COLUMNS = (
    "slice_id",
    "tier",
    "source",
    "model_version_id",
    "ls_task_id",
    "ls_annotation_id",
    "author",
    "lead_time_s",
    "mask_uri",
    "mask_sha256",
    "mask_rle",
    "created_at",
    "kind",
    "labelled_px",
)


def _insert_or_ignore_annotations(raw: Any, rows: Iterator[tuple]) -> int:
    cursor = raw.cursor()
    before = raw.total_changes
    cursor.executemany(
        f"INSERT OR IGNORE INTO annotations ({', '.join(_ANNOTATION_COLUMNS)}) "
        f"VALUES ({', '.join('?' * len(_ANNOTATION_COLUMNS))})",
        rows,
    )
    return raw.total_changes - before


def _copy_annotations(raw: Any, rows: Callable[[], Iterator[tuple]]) -> int:
    """PostgreSQL: ``COPY`` straight into the table under a savepoint; when a row's natural
    key exists already (the COPY fails as a whole), ``COPY`` into a temporary table and
    one ``INSERT … ON CONFLICT DO NOTHING`` instead. The new rows' count.

    ``rows`` makes the rows afresh at each call, as they are sent: Python formats them
    while the server inserts the ones before (the server's work is most of a COPY's time).
    The savepoint is SQL of its own: the first statement opens the session's transaction
    (psycopg's ``transaction()`` would commit on a connection with none open yet).
    """
    columns = ", ".join(_ANNOTATION_COLUMNS)
    with raw.cursor() as cursor:
        cursor.execute("SAVEPOINT copy_annotations")
        try:
            copied = _copy_rows(cursor, f"annotations ({columns})", rows())
        except UniqueViolation:
            cursor.execute("ROLLBACK TO SAVEPOINT copy_annotations")
        else:
            cursor.execute("RELEASE SAVEPOINT copy_annotations")
            return copied
        cursor.execute("RELEASE SAVEPOINT copy_annotations")
        cursor.execute(
            "CREATE TEMP TABLE IF NOT EXISTS incoming_annotations ON COMMIT DELETE ROWS AS "
            f"SELECT {columns} FROM annotations WITH NO DATA"
        )
        _copy_rows(cursor, f"incoming_annotations ({columns})", rows())
        cursor.execute(
            f"INSERT INTO annotations ({columns}) SELECT {columns} FROM incoming_annotations "
            "ON CONFLICT (slice_id, tier, source) DO NOTHING"
        )
        inserted = cursor.rowcount
        cursor.execute("TRUNCATE incoming_annotations")
    return inserted


def _copy_rows(cursor: Any, target: str, rows: Iterator[tuple]) -> int:
    """``COPY`` the rows into ``target`` (a table and its columns); how many it took."""
    with cursor.copy(f"COPY {target} FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
    return cursor.rowcount


def _annotation_rows(annotations: Sequence[NewAnnotation], created_at: str) -> Iterator[tuple]:
    """The annotations as rows in :data:`_ANNOTATION_COLUMNS` order, made one at a time."""
    for a in annotations:
        yield (
            a.slice_id,
            int(a.tier),
            a.source,
            a.model_version_id,
            a.ls_task_id,
            a.ls_annotation_id,
            a.author,
            a.lead_time_s,
            a.mask_uri,
            a.mask_sha256,
            None if a.mask_rle is None else _json(a.mask_rle),
            created_at,
            a.kind.value,
            _labelled_px(a),
        )


def _labelled_px(annotation: NewAnnotation) -> int | None:
    """The pixels a semantic annotation labels: given, or counted from its inline mask;
    None for an instance label or one without any mask.

    Raises:
        RegistryError: a semantic mask stored as a file without its count.
    """
    if annotation.kind != Kind.SEMANTIC or annotation.labelled_px is not None:
        return annotation.labelled_px if annotation.kind == Kind.SEMANTIC else None
    if annotation.mask_rle is None and annotation.mask_uri is None:
        return None
    if annotation.mask_rle is None:
        raise RegistryError(
            f"the {annotation.tier.name.lower()} label of slice {annotation.slice_id} from "
            f"{annotation.source} has no inline mask and no labelled_px: give the pixel count "
            "of a mask stored as a file (tomoloop.labels.masks.labelled_pixels)"
        )
    return labelled_pixels(annotation.mask_rle)


def _json(value: dict) -> str:
    """Compact JSON text of a mask (orjson: ~10× faster than ``json.dumps`` per row)."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


# the states review_summary counts (a superseded review is replaced by its update's)
REVIEW_STATES = tuple(s.value for s in ReviewState if s is not ReviewState.SUPERSEDED)


def _newest_versions(*tiers: Tier) -> Any:
    """Ids of the newest registry annotation of each Label Studio annotation of these
    tiers (an update in Label Studio is a newer registry annotation)."""
    return (
        select(func.max(Annotation.id))
        .where(
            Annotation.tier.in_([int(t) for t in tiers]), Annotation.ls_annotation_id.is_not(None)
        )
        .group_by(Annotation.ls_annotation_id, Annotation.tier)
    )


def _ranked_annotations(*kinds: Kind) -> Any:
    """Annotation id, slice id and rank within its slice and kind (1 = the best: highest
    tier, then newest) of labels of these kinds (default semantic), the select every
    "best label per slice" query filters.
    """
    return select(
        Annotation.id,
        Annotation.slice_id,
        func.row_number()
        .over(
            partition_by=(Annotation.slice_id, Annotation.kind),
            order_by=(Annotation.tier.desc(), Annotation.id.desc()),
        )
        .label("rank"),
    ).where(Annotation.kind.in_([k.value for k in kinds or (Kind.SEMANTIC,)]))


def _owner(owner: ProcessId | None) -> dict[str, Any]:
    """A run's process columns."""
    if owner is None:
        return {}
    return {
        "host": owner.host,
        "pid": owner.pid,
        "process_started": owner.started,
        "heartbeat_at": utcnow(),
    }


def _aware(moment: datetime) -> datetime:
    """A stored time as UTC-aware (SQLite returns naive ones)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _count_key(kind: str, tier: int) -> str:
    """What a label counts as: its tier's name (``auto`` … ``expert``) for a semantic
    label, ``instances`` for an instance label of any tier."""
    return Tier(tier).name.lower() if kind == Kind.SEMANTIC else "instances"


class Registry:
    """Volumes, slices, annotations, dataset versions, models, metrics and scores."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._active: ContextVar[Session | None] = ContextVar(f"registry-{id(self)}", default=None)

    @classmethod
    def from_url(cls, url: str, create: bool = True) -> Registry:
        """The registry at ``url`` with its schema at the head revision
        (:func:`tomoloop.db.engine.schema_at_head`: the embedded SQLite file is created and
        migrated on first use).

        ``create=False`` is for commands that only read: an absent SQLite file is not
        created (nor its folder); they see an empty registry held in memory instead.
        """
        path = sqlite_file(url)
        if not create and path is not None and not path.exists():
            url = "sqlite://"
        engine = make_engine(url)
        try:
            schema_at_head(engine)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed on success, rolled back on any error.

        Inside :meth:`atomic` it is the atomic block's transaction instead.
        """
        active = self._active.get()
        if active is not None:
            yield active
            return
        with self._sessions.begin() as session:
            yield session

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """Run several registry calls as one transaction: all of them, or none."""
        if self._active.get() is not None:
            yield
            return
        with self._sessions.begin() as session:
            token = self._active.set(session)
            try:
                yield
            finally:
                self._active.reset(token)

    def _insert(self, table: Any) -> Any:
        """INSERT with the dialect's ON CONFLICT support (SQLite and PostgreSQL alike)."""
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        return dialect.insert(table)

    # ------------------------------------------------------------ artifacts

    def artifact_keys(self) -> set[str]:
        """The key of every artifact a row refers to: the :data:`ARTIFACT_KEY_COLUMNS` and
        each ``uri`` in a dataset version's ``artifacts`` map."""
        with self.session() as s:
            keys = {
                key
                for column in ARTIFACT_KEY_COLUMNS
                for key in s.scalars(select(column).where(column.is_not(None)).distinct())
            }
            for artifacts in s.scalars(select(DatasetVersion.artifacts)):
                keys.update(entry["uri"] for entry in (artifacts or {}).values())
        return keys

    # ------------------------------------------------------------ volumes and slices

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
            RegistryError: ``name`` is taken by a volume with other content.
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
                select(Volume.id, Volume.sha256).where(
                    (Volume.sha256 == sha256) | (Volume.name == name)
                )
            ).all()
        for volume_id, found_sha in found:
            if found_sha == sha256:
                return volume_id
        raise RegistryError(
            f"volume name {name!r} is already used by another stack ({found[0][1][:12]}…): "
            "choose another --name"
        )

    def _get(self, table: type, key: int, what: str) -> Any:
        with self.session() as s:
            found = s.get(table, key) if 0 < key <= _MAX_ID else None
        if found is None:
            listing = _LISTINGS.get(what)
            hint = f": `tomoloop registry {listing}` lists them" if listing else ""
            raise RegistryError(f"no {what} with id {key}{hint}")
        return found

    def volume(self, volume_id: int) -> Volume:
        return self._get(Volume, volume_id, "volume")

    def volume_named(self, name: str) -> Volume:
        with self.session() as s:
            found = s.scalar(select(Volume).where(Volume.name == name))
        if found is None:
            raise RegistryError(f"no volume named {name!r}: see `tomoloop registry volumes`")
        return found

    def volumes(self) -> list[Volume]:
        with self.session() as s:
            return list(s.scalars(select(Volume).order_by(Volume.id)))

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

    def slice_volumes(self, slice_ids: Iterable[int]) -> dict[int, tuple[Slice, Volume]]:
        """``{slice id: (slice, its volume)}`` for the given ids."""
        wanted = list(slice_ids)
        out: dict[int, tuple[Slice, Volume]] = {}
        with self.session() as s:
            for start in range(0, len(wanted), _CHUNK):
                for slice_, volume in s.execute(
                    select(Slice, Volume)
                    .join(Volume, Volume.id == Slice.volume_id)
                    .where(Slice.id.in_(wanted[start : start + _CHUNK]))
                ):
                    out[slice_.id] = (slice_, volume)
        missing = set(wanted) - set(out)
        if missing:
            raise RegistryError(f"no slices with ids {sorted(missing)[:10]}")
        return out

    def al_round(self, round_id: int) -> ALRound:
        return self._get(ALRound, round_id, "active-learning round")

    # ------------------------------------------------------------ annotations

    def add_annotations(self, annotations: Sequence[NewAnnotation]) -> int:
        """Add annotations; ones whose (slice, tier, source) exists are left as they are.

        Returns the number of new rows. Nothing is ever deleted or overwritten: a higher
        tier supersedes a lower one when training data is chosen (:meth:`best_annotations`).
        Bulk path: SQLite ``INSERT OR IGNORE`` through executemany; PostgreSQL ``COPY``
        (:func:`_copy_annotations`).
        """
        now = utcnow().isoformat(" ")  # one stamp for all, formatted once (not per row)
        rows = partial(_annotation_rows, annotations, now)
        with self.session() as s:
            raw = s.connection().connection.dbapi_connection
            if self.engine.dialect.name == "postgresql":
                return _copy_annotations(raw, rows)
            return _insert_or_ignore_annotations(raw, rows())

    def annotation_id(self, slice_id: int, tier: Tier, source: str) -> int:
        """The id of the annotation with this natural key."""
        with self.session() as s:
            found = s.scalar(
                select(Annotation.id).where(
                    Annotation.slice_id == slice_id,
                    Annotation.tier == int(tier),
                    Annotation.source == source,
                )
            )
        if found is None:
            raise RegistryError(
                f"no {tier.name.lower()} annotation of slice {slice_id} from {source}"
            )
        return found

    def annotation(self, annotation_id: int) -> Annotation:
        return self._get(Annotation, annotation_id, "annotation")

    def best_annotations(self, volume_id: int | None = None) -> list[Annotation]:
        """Per slice, the annotation of the highest tier (the newest within that tier)."""
        return self._first_ranked(self._best_ranked(volume_id), Annotation.slice_id)

    def _first_ranked(self, ranked: Any, order: Any) -> list[Annotation]:
        """The annotations ranked 1 in ``ranked`` (a subquery of id and rank), by ``order``."""
        with self.session() as s:
            return list(
                s.scalars(
                    select(Annotation)
                    .join(ranked, ranked.c.id == Annotation.id)
                    .where(ranked.c.rank == 1)
                    .order_by(order)
                )
            )

    def best_labels(self, volume_id: int | None = None) -> dict[int, tuple[int, Tier]]:
        """Per slice id, the (annotation id, tier) of :meth:`best_annotations`, without
        loading any mask."""
        ranked = self._best_ranked(volume_id)
        with self.session() as s:
            rows = s.execute(
                select(Annotation.slice_id, Annotation.id, Annotation.tier)
                .join(ranked, ranked.c.id == Annotation.id)
                .where(ranked.c.rank == 1)
            )
            return {slice_id: (a, Tier(tier)) for slice_id, a, tier in rows}

    def _best_ranked(self, volume_id: int | None) -> Any:
        ranked = _ranked_annotations()
        if volume_id is not None:
            ranked = ranked.join(Slice, Slice.id == Annotation.slice_id).where(
                Slice.volume_id == volume_id
            )
        return ranked.subquery()

    def label_counts(self, volume_id: int | None = None) -> dict[str, int]:
        """Number of slices whose best label is of each tier (``{"auto": n, ...}``)."""
        counts = dict.fromkeys((t.name.lower() for t in Tier), 0)
        for _, tier in self.best_labels(volume_id).values():
            counts[tier.name.lower()] += 1
        return counts

    # ------------------------------------------------------------ dataset versions

    def freeze_dataset(
        self, name: str, members: dict[str, Sequence[int]], artifacts: dict | None = None
    ) -> DatasetVersion:
        """Freeze annotations (``{"train": [ids], "val": [...], "test": [...]}``) as a version.

        The content hash covers the (split, annotation id) pairs; freezing the same content
        again returns the existing version. A new content becomes version n + 1 with the
        latest version as parent.

        Raises:
            NameRuleError: ``name`` breaks :func:`tomoloop.names.check_name`'s rule.
        """
        check_name(name, "dataset name")
        pairs = sorted((split, int(a)) for split, ids in members.items() for a in ids)
        digest = hashlib.sha256(json.dumps(pairs).encode()).hexdigest()
        with self.session() as s:
            existing = s.scalar(
                select(DatasetVersion).where(
                    DatasetVersion.name == name, DatasetVersion.content_hash == digest
                )
            )
            if existing is not None:
                return existing
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
        return version

    def dataset(self, name: str, version: int | None = None) -> DatasetVersion:
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
                f"no dataset {name!r}{'' if version is None else f'@{version}'}: "
                "`tomoloop registry datasets` lists them; `tomoloop ingest` makes one"
            )
        return found

    def dataset_version(self, dataset_version_id: int) -> DatasetVersion:
        return self._get(DatasetVersion, dataset_version_id, "dataset version")

    def datasets(self) -> list[DatasetVersion]:
        with self.session() as s:
            return list(
                s.scalars(
                    select(DatasetVersion).order_by(DatasetVersion.name, DatasetVersion.version)
                )
            )

    def dataset_counts(self, dataset_version_id: int) -> dict[str, dict[str, int]]:
        """Labels of a dataset version per split: semantic ones per tier, and instance
        labels (any tier) as ``instances`` when there are any: ``{split: {tier: n}}``.
        """
        counts: dict[str, dict[str, int]] = {}
        with self.session() as s:
            for split, kind, tier, n in s.execute(
                select(DatasetMember.split, Annotation.kind, Annotation.tier, func.count())
                .join(Annotation, Annotation.id == DatasetMember.annotation_id)
                .where(DatasetMember.dataset_version_id == dataset_version_id)
                .group_by(DatasetMember.split, Annotation.kind, Annotation.tier)
            ):
                key = _count_key(kind, tier)
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

    def lower_labels(self, annotation_id: int) -> list[Annotation]:
        """The semantic labels a sparse label is merged over: of its slice, the newest of
        each lower tier made before it (so a frozen dataset version trains the same), lowest
        tier first."""
        top = self.annotation(annotation_id)
        ranked = (
            select(
                Annotation.id,
                func.row_number()
                .over(partition_by=Annotation.tier, order_by=Annotation.id.desc())
                .label("rank"),
            )
            .where(
                Annotation.slice_id == top.slice_id,
                Annotation.kind == Kind.SEMANTIC.value,
                Annotation.tier < top.tier,
                Annotation.id < top.id,
            )
            .subquery()
        )
        return self._first_ranked(ranked, Annotation.tier)

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

    def refresh_dataset(self, name: str) -> DatasetVersion:
        """A version of dataset ``name`` with the same slices and splits as its latest, each
        slice now with its best label of each kind (higher tiers supersede): its semantic
        label, and its instance label where a person drew one; the latest itself when
        nothing changed.
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
        return self.freeze_dataset(name, members, latest.artifacts)

    def dataset_volumes(self, dataset_version_id: int) -> list[Volume]:
        """The volumes whose slices a dataset version holds, by id."""
        with self.session() as s:
            return list(
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

    # ------------------------------------------------------------ models

    def register_model(
        self,
        name: str,
        architecture: str,
        backend: str,
        dataset_version_id: int | None,
        config: dict | None = None,
        parent_id: int | None = None,
        checkpoint_uri: str | None = None,
        checkpoint_sha256: str | None = None,
        metrics: Sequence[NewMetric] = (),
    ) -> int:
        """Register a candidate model version and its metrics; its id.

        Raises:
            NameRuleError: ``name`` breaks :func:`tomoloop.names.check_name`'s rule.
        """
        check_name(name, "model name")
        with self.atomic(), self.session() as s:
            model = ModelVersion(
                name=name,
                architecture=architecture,
                backend=backend,
                config=config or {},
                parent_id=parent_id,
                dataset_version_id=dataset_version_id,
                checkpoint_uri=checkpoint_uri,
                checkpoint_sha256=checkpoint_sha256,
                stage=Stage.CANDIDATE.value,
            )
            s.add(model)
            s.flush()
            self.add_metrics(model.id, metrics)
        return model.id

    def start_training(self, model_id: int, device: str, owner: ProcessId | None = None) -> int:
        """Open a training run (status ``running``) of a model version, run by process
        ``owner``; its id."""
        with self.session() as s:
            run = TrainingRun(
                model_version_id=model_id, device=device, status=RunStatus.RUNNING, **_owner(owner)
            )
            s.add(run)
            s.flush()
        return run.id

    def resume_training(self, run_id: int, owner: ProcessId) -> None:
        """Mark a run ``running`` again, now run by process ``owner``."""
        with self.session() as s:
            s.execute(
                update(TrainingRun)
                .where(TrainingRun.id == run_id)
                .values(status=RunStatus.RUNNING, ended_at=None, failure=None, **_owner(owner))
            )

    def beat(self, run_id: int) -> bool:
        """A running run's process is alive now; False when the run is not running."""
        with self.session() as s:
            beaten = s.scalar(
                update(TrainingRun)
                .where(TrainingRun.id == run_id, TrainingRun.status == RunStatus.RUNNING)
                .values(heartbeat_at=utcnow())
                .returning(TrainingRun.id)
            )
        return beaten is not None

    def fail_gone_runs(
        self, reason: Callable[[ProcessId | None, datetime, datetime], str | None]
    ) -> dict[int, str]:
        """Mark ``failed`` every ``running`` run whose process is gone: ``reason(owner,
        last sign of life, now)`` says why, or None while it may still run
        (:func:`tomoloop.processes.gone_reason`). ``{run id: reason}`` of those marked.
        """
        now = utcnow()
        marked: dict[int, str] = {}
        with self.session() as s:
            running = select(TrainingRun).where(TrainingRun.status == RunStatus.RUNNING)
            for run in s.scalars(running):
                owner = (
                    None
                    if run.host is None or run.pid is None
                    else ProcessId(run.host, run.pid, run.process_started or 0.0)
                )
                last = _aware(run.heartbeat_at or run.started_at)
                why = reason(owner, last, now)
                if why is not None:
                    marked[run.id] = why
            for run_id, why in marked.items():
                s.execute(
                    update(TrainingRun)
                    .where(TrainingRun.id == run_id, TrainingRun.status == RunStatus.RUNNING)
                    .values(status=RunStatus.FAILED, ended_at=now, failure=why)
                )
        return marked

    def runs(self) -> list[TrainingRun]:
        """Every training run, oldest first."""
        with self.session() as s:
            return list(s.scalars(select(TrainingRun).order_by(TrainingRun.id)))

    def update_training(
        self,
        run_id: int,
        status: str,
        epochs: int | None = None,
        curve_uri: str | None = None,
        checkpoint: tuple[str, str] | None = None,
    ) -> None:
        """Set a run's status (``running``, ``finished``, ``failed``; the end time is set
        for the last two), its epoch count and curve; on success store the checkpoint
        ``(uri, sha256)`` on its model version.
        """
        with self.session() as s:
            run = s.get(TrainingRun, run_id)
            if run is None:
                raise RegistryError(f"no training run with id {run_id}")
            run.status = status
            run.ended_at = utcnow() if RunStatus(status).ended else None
            if epochs is not None:
                run.epochs = epochs
            if curve_uri is not None:
                run.curve_uri = curve_uri
            if checkpoint is not None:
                model = s.get(ModelVersion, run.model_version_id)
                model.checkpoint_uri, model.checkpoint_sha256 = checkpoint

    def training_runs(self, model_id: int) -> list[TrainingRun]:
        with self.session() as s:
            return list(
                s.scalars(
                    select(TrainingRun)
                    .where(TrainingRun.model_version_id == model_id)
                    .order_by(TrainingRun.id)
                )
            )

    def add_metrics(
        self, model_id: int, metrics: Sequence[NewMetric], training_run_id: int | None = None
    ) -> None:
        """Record numbers of a model version (and run): learning curves, evaluations."""
        with self.session() as s:
            s.add_all(
                Metric(model_version_id=model_id, training_run_id=training_run_id, **m.__dict__)
                for m in metrics
            )

    def model(self, model_id: int) -> ModelVersion:
        return self._get(ModelVersion, model_id, "model version")

    def models(self) -> list[ModelVersion]:
        with self.session() as s:
            return list(s.scalars(select(ModelVersion).order_by(ModelVersion.id)))

    def rounds(self) -> list[tuple[ALRound, dict[str, int]]]:
        """Every active-learning round with its item count per state."""
        with self.session() as s:
            states: dict[int, dict[str, int]] = {}
            for round_id, state, n in s.execute(
                select(RoundItem.round_id, RoundItem.state, func.count()).group_by(
                    RoundItem.round_id, RoundItem.state
                )
            ):
                states.setdefault(round_id, {})[state] = n
            return [
                (r, states.get(r.id, {})) for r in s.scalars(select(ALRound).order_by(ALRound.id))
            ]

    def metrics(self, model_id: int) -> list[Metric]:
        with self.session() as s:
            return list(
                s.scalars(
                    select(Metric).where(Metric.model_version_id == model_id).order_by(Metric.id)
                )
            )

    def champion(self, name: str) -> ModelVersion | None:
        with self.session() as s:
            return s.scalar(
                select(ModelVersion).where(
                    ModelVersion.name == name, ModelVersion.stage == Stage.CHAMPION.value
                )
            )

    def promote(self, model_id: int) -> None:
        """Make a model its name's champion; the previous champion is retired.

        One transaction; the partial unique index allows one champion per name, so two
        promotions racing end with exactly one champion (the loser raises RegistryError).
        """
        model = self.model(model_id)
        try:
            with self.session() as s:
                s.execute(
                    update(ModelVersion)
                    .where(
                        ModelVersion.name == model.name,
                        ModelVersion.stage == Stage.CHAMPION.value,
                        ModelVersion.id != model_id,
                    )
                    .values(stage=Stage.RETIRED.value)
                )
                s.execute(
                    update(ModelVersion)
                    .where(ModelVersion.id == model_id)
                    .values(stage=Stage.CHAMPION.value)
                )
        except IntegrityError as exc:
            raise RegistryError(
                f"model {model_id} was not promoted: another model of {model.name!r} became "
                "champion at the same time; compare with it and promote again if still better"
            ) from exc

    # ------------------------------------------------------------ lineage

    def lineage(self, model_id: int) -> Lineage:
        """Model → ancestors → dataset version → annotations (semantic ones by tier,
        instance labels as ``instances``) → volumes."""
        model = self.model(model_id)
        ancestors, parent = [], model.parent_id
        while parent is not None:
            ancestors.append(parent)
            parent = self.model(parent).parent_id
        by_tier: dict[str, int] = {}
        volume_ids: list[int] = []
        labelled_px = 0
        if model.dataset_version_id is not None:
            labelled_px = sum(self.dataset_labelled_px(model.dataset_version_id).values())
            with self.session() as s:
                members = (
                    select(Annotation.kind, Annotation.tier, Slice.volume_id)
                    .join(DatasetMember, DatasetMember.annotation_id == Annotation.id)
                    .join(Slice, Slice.id == Annotation.slice_id)
                    .where(DatasetMember.dataset_version_id == model.dataset_version_id)
                    .subquery()
                )
                for kind, tier, count in s.execute(
                    select(members.c.kind, members.c.tier, func.count()).group_by(
                        members.c.kind, members.c.tier
                    )
                ):
                    key = _count_key(kind, tier)
                    by_tier[key] = by_tier.get(key, 0) + count
                volume_ids = list(
                    s.scalars(select(members.c.volume_id).distinct().order_by(members.c.volume_id))
                )
        return Lineage(
            model_id, ancestors, model.dataset_version_id, by_tier, volume_ids, labelled_px
        )

    def models_trained_on(self, annotation_id: int) -> list[int]:
        """Ids of the model versions whose training dataset holds this annotation."""
        with self.session() as s:
            return list(
                s.scalars(
                    select(ModelVersion.id)
                    .join(
                        DatasetMember,
                        DatasetMember.dataset_version_id == ModelVersion.dataset_version_id,
                    )
                    .where(DatasetMember.annotation_id == annotation_id)
                    .order_by(ModelVersion.id)
                )
            )

    # ------------------------------------------------------------ rounds

    def open_round(
        self,
        dataset: str,
        strategy: str,
        model_id: int | None,
        chosen: Sequence[tuple[int, float]],
        budget: int | None = None,
    ) -> int:
        """An open active-learning round of ``chosen`` ``(slice id, score)`` (best first,
        ranked from 1), every item pending; its id.
        """
        with self.atomic(), self.session() as s:
            round_ = ALRound(
                dataset=dataset,
                strategy=strategy,
                budget=len(chosen) if budget is None else budget,
                model_version_id=model_id,
                status=RoundStatus.OPEN,
            )
            s.add(round_)
            s.flush()
            s.add_all(
                RoundItem(round_id=round_.id, slice_id=slice_id, score=score, rank=rank)
                for rank, (slice_id, score) in enumerate(chosen, start=1)
            )
        return round_.id

    def round_items(self, round_id: int) -> list[RoundItem]:
        with self.session() as s:
            return list(
                s.scalars(
                    select(RoundItem).where(RoundItem.round_id == round_id).order_by(RoundItem.rank)
                )
            )

    def set_round_tasks(
        self, round_id: int, tasks: dict[int, int], predictions: dict[int, dict] | None = None
    ) -> None:
        """Record the Label Studio task id of each pushed slice (``{slice id: task id}``) and
        the prediction pre-filled in it (``{slice id: inline mask}``, see
        :func:`tomoloop.labels.encode_class_mask`).
        """
        predictions = predictions or {}
        with self.session() as s:
            for slice_id, task_id in tasks.items():
                shown = predictions.get(slice_id)
                s.execute(
                    update(RoundItem)
                    .where(RoundItem.round_id == round_id, RoundItem.slice_id == slice_id)
                    .values(
                        ls_task_id=task_id, **({} if shown is None else {"prediction_rle": shown})
                    )
                )

    def round_item(self, round_id: int, slice_id: int) -> RoundItem | None:
        """The item of a slice in a round (None: the slice is not in that round)."""
        with self.session() as s:
            return s.scalar(
                select(RoundItem).where(
                    RoundItem.round_id == round_id, RoundItem.slice_id == slice_id
                )
            )

    def open_rounds(self, dataset: str) -> list[int]:
        """Ids of the dataset's rounds still waiting for labels, oldest first."""
        with self.session() as s:
            return list(
                s.scalars(
                    select(ALRound.id)
                    .where(ALRound.dataset == dataset, ALRound.status == RoundStatus.OPEN)
                    .order_by(ALRound.id)
                )
            )

    def new_labels(self, dataset: str) -> int:
        """Slices of dataset ``dataset`` whose best label was made by a person (tier annotator
        or expert) and is not in the version the newest model of that name trained on (all
        such slices before any model). A label superseded by a newer one does not count.
        """
        latest = self.dataset(dataset)
        trained_on = select(ModelVersion.dataset_version_id).where(ModelVersion.name == dataset)
        trained_on = trained_on.order_by(ModelVersion.id.desc()).limit(1).scalar_subquery()
        slices = (
            select(Annotation.slice_id)
            .join(DatasetMember, DatasetMember.annotation_id == Annotation.id)
            .where(DatasetMember.dataset_version_id == latest.id)
        )
        best = _ranked_annotations().where(Annotation.slice_id.in_(slices)).subquery()
        used = select(DatasetMember.annotation_id).where(
            DatasetMember.dataset_version_id == trained_on
        )
        with self.session() as s:
            return s.scalar(
                select(func.count())
                .select_from(best)
                .join(Annotation, Annotation.id == best.c.id)
                .where(
                    best.c.rank == 1,
                    Annotation.tier >= Tier.ANNOTATOR,
                    Annotation.id.not_in(used),
                )
            )

    def lead_times(self, dataset: str) -> dict[int, float]:
        """Annotation seconds of every slice a person labelled in a round of ``dataset``."""
        with self.session() as s:
            return {
                slice_id: seconds
                for slice_id, seconds in s.execute(
                    select(RoundItem.slice_id, RoundItem.annotation_seconds)
                    .join(ALRound, ALRound.id == RoundItem.round_id)
                    .where(
                        ALRound.dataset == dataset,
                        RoundItem.state == ItemState.ANNOTATED,
                        RoundItem.annotation_seconds.is_not(None),
                    )
                )
            }

    def close_round(self, round_id: int) -> dict[str, int]:
        """Close a round whose items are all answered; its item count per state.

        A round with pending items stays open (the counts say how many).
        """
        self.al_round(round_id)
        with self.session() as s:
            counts = dict.fromkeys((state.value for state in ItemState), 0)
            for state, n in s.execute(
                select(RoundItem.state, func.count())
                .where(RoundItem.round_id == round_id)
                .group_by(RoundItem.state)
            ):
                counts[state] = n
            if counts[ItemState.PENDING] == 0:
                s.execute(
                    update(ALRound).where(ALRound.id == round_id).values(status=RoundStatus.CLOSED)
                )
        return counts

    def resolve_task(self, ls_task_id: int, state: str, seconds: float | None = None) -> None:
        """Mark the round items of a Label Studio task ``annotated`` or ``skipped`` (a skip
        never undoes an annotation another person submitted).
        """
        query = update(RoundItem).where(RoundItem.ls_task_id == ls_task_id)
        if state == ItemState.SKIPPED:
            query = query.where(RoundItem.state != ItemState.ANNOTATED)
        with self.session() as s:
            s.execute(query.values(state=state, annotation_seconds=seconds))

    # ------------------------------------------------------------ reviews

    def task_labels(self, ls_task_id: int, slice_id: int) -> list[Annotation]:
        """The newest tier-annotator semantic label of each Label Studio annotation of one
        task of one slice (one per annotation an annotator submitted), oldest first.
        """
        with self.session() as s:
            return list(
                s.scalars(
                    select(Annotation)
                    .where(Annotation.id.in_(_newest_versions(Tier.ANNOTATOR)))
                    .where(
                        Annotation.ls_task_id == ls_task_id,
                        Annotation.slice_id == slice_id,
                        Annotation.kind == Kind.SEMANTIC.value,
                    )
                    .order_by(Annotation.id)
                )
            )

    def add_review(
        self,
        annotation_id: int,
        dataset: str,
        reasons: Sequence[str],
        model_iou: float | None,
    ) -> None:
        """Queue an annotator's label for review (once per label: a repeat is a no-op)."""
        annotation = self.annotation(annotation_id)
        with self.session() as s:
            s.execute(
                self._insert(Review)
                .values(
                    annotation_id=annotation_id,
                    slice_id=annotation.slice_id,
                    dataset=dataset,
                    reasons=",".join(reasons),
                    model_iou=model_iou,
                    state=ReviewState.QUEUED,
                    created_at=utcnow(),
                )
                .on_conflict_do_nothing()
            )

    def supersede_reviews(self, annotation_id: int) -> int:
        """Mark the open reviews of earlier versions of this label's Label Studio
        annotation ``superseded`` (the newer version is routed afresh); how many.
        """
        annotation = self.annotation(annotation_id)
        earlier = select(Annotation.id).where(
            Annotation.ls_annotation_id == annotation.ls_annotation_id,
            Annotation.tier == annotation.tier,
            Annotation.id < annotation_id,
        )
        with self.session() as s:
            done = s.scalars(
                update(Review)
                .where(Review.annotation_id.in_(earlier), Review.state.in_(ReviewState.open()))
                .values(state=ReviewState.SUPERSEDED, resolved_at=utcnow())
                .returning(Review.id)
            )
            return len(list(done))

    def add_agreements(self, rows: Sequence[Agreement]) -> None:
        """Record per-class Dice of label pairs (a pair and class already recorded is kept)."""
        columns = [c.name for c in Agreement.__table__.columns if c.name != "id"]
        values = [{c: getattr(r, c) for c in columns} for r in rows]
        if values:
            with self.session() as s:
                s.execute(self._insert(Agreement).values(values).on_conflict_do_nothing())

    def reviews(self, dataset: str) -> list[Review]:
        """The dataset's reviews, oldest first."""
        with self.session() as s:
            return list(
                s.scalars(select(Review).where(Review.dataset == dataset).order_by(Review.id))
            )

    def has_reviews(self, dataset: str) -> bool:
        with self.session() as s:
            return bool(s.scalar(select(exists().where(Review.dataset == dataset))))

    def claim_reviews(self, dataset: str, stale_s: float = 600.0) -> list[Review]:
        """Claim the dataset's queued reviews for pushing (state ``pushing``), and ones a
        pusher claimed more than ``stale_s`` seconds ago without finishing; of two syncs
        at once, each review goes to one.
        """
        stale = utcnow() - timedelta(seconds=stale_s)
        claimable = (Review.state == ReviewState.QUEUED) | (
            (Review.state == ReviewState.PUSHING) & (Review.claimed_at < stale)
        )
        with self.session() as s:
            claimed = list(
                s.scalars(
                    update(Review)
                    .where(Review.dataset == dataset, claimable)
                    .values(state=ReviewState.PUSHING, claimed_at=utcnow())
                    .returning(Review.id)
                )
            )
            return list(s.scalars(select(Review).where(Review.id.in_(claimed)).order_by(Review.id)))

    def release_reviews(self, review_ids: Sequence[int]) -> None:
        """Put claimed reviews back in the queue (their push failed)."""
        with self.session() as s:
            s.execute(
                update(Review)
                .where(Review.id.in_(list(review_ids)), Review.state == ReviewState.PUSHING)
                .values(state=ReviewState.QUEUED, claimed_at=None)
            )

    def review(self, review_id: int) -> Review:
        return self._get(Review, review_id, "review")

    def set_review_tasks(self, tasks: dict[int, int]) -> None:
        """Record the review project's task of each claimed review (``{review id: task
        id}``); they become ``pending``.
        """
        with self.session() as s:
            for review_id, task_id in tasks.items():
                s.execute(
                    update(Review)
                    .where(Review.id == review_id, Review.state == ReviewState.PUSHING)
                    .values(ls_task_id=task_id, state=ReviewState.PENDING)
                )

    def resolve_review(
        self, review_id: int, state: str, expert_annotation_id: int | None = None
    ) -> None:
        """Record a reviewer's answer: ``approved`` / ``corrected`` with the tier-expert
        label — only forward: a newer label (higher id) replaces an older one, never the
        reverse, as in :meth:`best_annotations` — or ``skipped``, which never undoes an
        answer.
        """
        query = update(Review).where(Review.id == review_id)
        if state == ReviewState.SKIPPED:
            query = query.where(Review.state.in_(ReviewState.open()))
        else:
            query = query.where(
                Review.expert_annotation_id.is_(None)
                | (Review.expert_annotation_id < expert_annotation_id)
            )
        with self.session() as s:
            s.execute(
                query.values(
                    state=state, expert_annotation_id=expert_annotation_id, resolved_at=utcnow()
                )
            )

    def review_summary(self, dataset: str) -> dict[str, Any]:
        """Reviews of a dataset by state and by reason, and the mean per-class Dice of
        each kind of label pair (``{"annotators": {class: {"dice": x, "pairs": n}}, "review":
        ...}``; annotator vs reviewer is ``review``). Only pairs of current labels count
        (a label updated in Label Studio replaces its pairs).
        """
        states = dict.fromkeys(REVIEW_STATES, 0)
        reasons: dict[str, int] = {}
        agreement: dict[str, dict[str, dict[str, float]]] = {k: {} for k in AGREEMENT_KINDS}
        current = _newest_versions(Tier.ANNOTATOR, Tier.EXPERT)
        with self.session() as s:
            for state, why, n in s.execute(
                select(Review.state, Review.reasons, func.count())
                .where(Review.dataset == dataset, Review.state != ReviewState.SUPERSEDED)
                .group_by(Review.state, Review.reasons)
            ):
                states[state] += n
                for reason in why.split(","):
                    reasons[reason] = reasons.get(reason, 0) + n
            for kind, name, dice, n in s.execute(
                select(Agreement.kind, Agreement.class_name, func.avg(Agreement.dice), func.count())
                .where(
                    Agreement.dataset == dataset,
                    Agreement.annotation_a_id.in_(current),
                    Agreement.annotation_b_id.in_(current),
                )
                .group_by(Agreement.kind, Agreement.class_name)
                .order_by(Agreement.kind, Agreement.class_name)
            ):
                agreement[kind][name] = {"dice": float(dice), "pairs": n}
        return {"dataset": dataset, "states": states, "reasons": reasons, "agreement": agreement}

    # ------------------------------------------------------------ Label Studio events

    def record_ls_event(self, event: LabelStudioEvent) -> bool:
        """Record a handled Label Studio event; False if its key was already recorded."""
        values = {
            c.name: getattr(event, c.name)
            for c in LabelStudioEvent.__table__.columns
            if c.name != "id" and getattr(event, c.name) is not None
        }
        values.setdefault("received_at", utcnow())
        values.setdefault("reason", "")
        with self.session() as s:
            inserted = s.scalar(
                self._insert(LabelStudioEvent)
                .values(**values)
                .on_conflict_do_nothing()
                .returning(LabelStudioEvent.id)
            )  # RETURNING, not rowcount: an ORM insert reports rowcount -1 on PostgreSQL
            return inserted is not None

    def ls_event_keys(self, keys: Iterable[str]) -> set[str]:
        """Which of these event keys are already recorded."""
        wanted = list(keys)
        found: set[str] = set()
        with self.session() as s:
            for start in range(0, len(wanted), _CHUNK):
                found.update(
                    s.scalars(
                        select(LabelStudioEvent.key).where(
                            LabelStudioEvent.key.in_(wanted[start : start + _CHUNK])
                        )
                    )
                )
        return found

    def ls_events(self, status: str | None = None) -> list[LabelStudioEvent]:
        query = select(LabelStudioEvent).order_by(LabelStudioEvent.id)
        if status is not None:
            query = query.where(LabelStudioEvent.status == status)
        with self.session() as s:
            return list(s.scalars(query))

    # ------------------------------------------------------------ scores

    def record_scores(self, model_id: int, scores: dict[int, float], method: str = "") -> None:
        """Store a model's score per slice id (replacing that model's earlier scores)."""
        rows = [
            {"model_version_id": model_id, "slice_id": k, "score": float(v), "method": method}
            for k, v in scores.items()
        ]
        with self.session() as s:
            for start in range(0, len(rows), _CHUNK):
                statement = self._insert(SliceScore)
                s.connection().execute(
                    statement.on_conflict_do_update(
                        index_elements=["model_version_id", "slice_id"],
                        set_={
                            "score": statement.excluded.score,
                            "method": statement.excluded.method,
                        },
                    ),
                    rows[start : start + _CHUNK],
                )

    def top_unlabelled(self, model_id: int, k: int) -> list[tuple[int, float]]:
        """The k highest-scored slices of a model that no person has labelled and that are
        not waiting in an open round: ``[(slice id, score), ...]``, best first.

        Walks the (model, score) index from the top and skips labelled or pending slices
        with indexed anti-joins, so it reads about k rows, not the whole table.
        """
        labelled = exists().where(
            and_(
                Annotation.slice_id == SliceScore.slice_id,
                Annotation.tier >= Tier.ANNOTATOR,
                Annotation.kind == Kind.SEMANTIC.value,
            )
        )
        pending = exists().where(
            and_(RoundItem.slice_id == SliceScore.slice_id, RoundItem.state == ItemState.PENDING)
        )
        query = (
            select(SliceScore.slice_id, SliceScore.score)
            .where(SliceScore.model_version_id == model_id, ~labelled, ~pending)
            .order_by(SliceScore.score.desc(), SliceScore.slice_id)
            .limit(k)
        )
        with self.session() as s:
            return [(slice_id, score) for slice_id, score in s.execute(query)]
