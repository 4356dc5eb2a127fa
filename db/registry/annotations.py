"""Annotations: bulk adds (SQLite ``INSERT OR IGNORE``, PostgreSQL ``COPY``) and the
best label of each slice (higher tiers supersede lower ones).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import orjson
from psycopg.errors import UniqueViolation
from sqlalchemy import func, select

from tomoloop.db import entities
from tomoloop.db.entities import frozen_all
from tomoloop.db.models import (
    Annotation,
    Slice,
    utcnow,
)
from tomoloop.db.registry.store import RegistryError, Store
from tomoloop.db.states import (
    Kind,
)
from tomoloop.labels.masks import labelled_pixels
from tomoloop.labels.tiers import Tier


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


class AnnotationStore(Store):
    """Annotations of slices."""

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

    def annotation(self, annotation_id: int) -> entities.Annotation:
        return self._get(Annotation, annotation_id, "annotation")

    def best_annotations(self, volume_id: int | None = None) -> list[entities.Annotation]:
        """Per slice, the annotation of the highest tier (the newest within that tier)."""
        return self._first_ranked(self._best_ranked(volume_id), Annotation.slice_id)

    def _first_ranked(self, ranked: Any, order: Any) -> list[entities.Annotation]:
        """The annotations ranked 1 in ``ranked`` (a subquery of id and rank), by ``order``."""
        with self.session() as s:
            return frozen_all(
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

    def lower_labels(self, annotation_id: int) -> list[entities.Annotation]:
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
