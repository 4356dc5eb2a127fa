"""The registry's tables (SQLAlchemy 2.0 typed ORM). Schema changes go through Alembic only.

Idea of the data model (DESIGN.md): a Volume is cut into Slices; an Annotation is one
label of one slice with a tier (auto < model < annotator < expert) and its provenance; a
DatasetVersion freezes a set of annotations with a split; ModelVersions are trained on a
DatasetVersion, have TrainingRuns and Metrics, score slices (SliceScore); ALRounds pick
slices (RoundItem) for people to label. A Review sends an annotator's label to a second
person; an Agreement is the per-class Dice of two people's labels of one slice.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from tomoloop.active.review import AGREEMENT_KINDS
from tomoloop.db.states import (
    EventStatus,
    EventVia,
    ItemState,
    Kind,
    ReviewState,
    RoundStatus,
    RunStatus,
    Stage,
    one_of,
)
from tomoloop.labels.splits import SPLIT_NAMES
from tomoloop.labels.tiers import Tier

__all__ = [
    "ALRound",
    "Agreement",
    "Annotation",
    "Base",
    "DatasetMember",
    "DatasetVersion",
    "Kind",
    "LabelStudioEvent",
    "Metric",
    "ModelVersion",
    "Review",
    "RoundItem",
    "Slice",
    "SliceScore",
    "Stage",
    "Tier",
    "TrainingRun",
    "Volume",
    "utcnow",
]

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Volume(Base):
    """One CT / FIB-SEM stack. Shape (z, y, x) in voxels, voxel size in µm."""

    __tablename__ = "volumes"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    path: Mapped[str] = mapped_column(String(2000))
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    shape_z: Mapped[int]
    shape_y: Mapped[int]
    shape_x: Mapped[int]
    dtype: Mapped[str] = mapped_column(String(20))
    voxel_z_um: Mapped[float | None] = mapped_column(Float)
    voxel_y_um: Mapped[float | None] = mapped_column(Float)
    voxel_x_um: Mapped[float | None] = mapped_column(Float)
    modality: Mapped[str] = mapped_column(String(40), default="xct")
    material: Mapped[str] = mapped_column(String(200), default="")
    phases: Mapped[str] = mapped_column(String(2000))  # "pore=0,nmc=1,cbd=2"
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Slice(Base):
    """(volume, axis, index): the unit that is scored, selected and annotated."""

    __tablename__ = "slices"
    __table_args__ = (
        UniqueConstraint("volume_id", "axis", "index", name="uq_slices_position"),
        CheckConstraint("axis IN ('z', 'y', 'x')", name="axis"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    volume_id: Mapped[int] = mapped_column(ForeignKey("volumes.id", ondelete="RESTRICT"))
    axis: Mapped[str] = mapped_column(String(1))
    index: Mapped[int] = mapped_column(Integer)


class Annotation(Base):
    """One label of one slice. Natural key: (slice, tier, source); nothing is deleted.

    ``kind`` semantic: a class-index mask, either an artifact (``mask_uri`` +
    ``mask_sha256``) or inline (``mask_rle``: ``{"size": [h, w], "classes": {class index:
    COCO RLE counts}}``). ``kind`` instance: one mask per particle, inline (``mask_rle``:
    ``{"size": [h, w], "instances": [{"class": class index, "counts": COCO RLE}]}``); a
    slice's best label of each kind is chosen separately.
    ``labelled_px``: the pixels a semantic label labels (h × w for a dense one, the area of
    its ``labelled`` region for a sparse one); None for an instance label.
    ``source`` says where it came from: ``auto:<labels sha256>``, ``model:<version id>``,
    ``ls:<project>/<annotation id>@<updated>``, ...
    """

    __tablename__ = "annotations"
    __table_args__ = (
        UniqueConstraint("slice_id", "tier", "source", name="uq_annotations_natural_key"),
        CheckConstraint(f"tier BETWEEN {min(Tier):d} AND {max(Tier):d}", name="tier"),
        CheckConstraint(one_of("kind", Kind), name="kind"),
    )  # the natural-key index also serves lookups by (slice_id, tier): its prefix
    id: Mapped[int] = mapped_column(primary_key=True)
    slice_id: Mapped[int] = mapped_column(ForeignKey("slices.id", ondelete="RESTRICT"))
    tier: Mapped[int] = mapped_column(SmallInteger)
    kind: Mapped[str] = mapped_column(
        String(10), default=Kind.SEMANTIC, server_default=Kind.SEMANTIC.value
    )
    source: Mapped[str] = mapped_column(String(500))
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    ls_task_id: Mapped[int | None]
    ls_annotation_id: Mapped[int | None]
    author: Mapped[str] = mapped_column(String(200), default="")
    lead_time_s: Mapped[float | None] = mapped_column(Float)
    mask_uri: Mapped[str | None] = mapped_column(String(2000))
    mask_sha256: Mapped[str | None] = mapped_column(String(64))
    mask_rle: Mapped[dict | None] = mapped_column(JSON)
    labelled_px: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DatasetVersion(Base):
    """An immutable, content-hashed set of annotations with a split, and its artifacts.

    ``artifacts`` maps a name (``coco``, ``masks``) to ``{"uri": ..., "sha256": ...}``.
    """

    __tablename__ = "dataset_versions"
    __table_args__ = (
        UniqueConstraint("name", "version", name="uq_dataset_versions_name_version"),
        UniqueConstraint("name", "content_hash", name="uq_dataset_versions_name_hash"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[int]
    content_hash: Mapped[str] = mapped_column(String(64))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("dataset_versions.id"))
    artifacts: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DatasetMember(Base):
    """An annotation in a dataset version, with its split (train / val / test)."""

    __tablename__ = "dataset_members"
    __table_args__ = (
        CheckConstraint(one_of("split", SPLIT_NAMES), name="split"),
        Index("ix_dataset_members_annotation", "annotation_id"),
    )
    dataset_version_id: Mapped[int] = mapped_column(
        ForeignKey("dataset_versions.id"), primary_key=True
    )
    annotation_id: Mapped[int] = mapped_column(ForeignKey("annotations.id"), primary_key=True)
    split: Mapped[str] = mapped_column(String(5))


class ModelVersion(Base):
    """A trained model: architecture, backend, config, lineage, checkpoint, stage."""

    __tablename__ = "model_versions"
    __table_args__ = (
        CheckConstraint(one_of("stage", Stage), name="stage"),
        # at most one champion per model name, whatever races to promote
        Index(
            "uq_model_versions_one_champion",
            "name",
            unique=True,
            sqlite_where=text(f"stage = '{Stage.CHAMPION}'"),
            postgresql_where=text(f"stage = '{Stage.CHAMPION}'"),
        ),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    architecture: Mapped[str] = mapped_column(String(100))
    backend: Mapped[str] = mapped_column(String(40))
    config: Mapped[dict] = mapped_column(JSON, default=dict)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    dataset_version_id: Mapped[int | None] = mapped_column(ForeignKey("dataset_versions.id"))
    checkpoint_uri: Mapped[str | None] = mapped_column(String(2000))
    checkpoint_sha256: Mapped[str | None] = mapped_column(String(64))
    stage: Mapped[str] = mapped_column(String(20), default=Stage.CANDIDATE.value)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class TrainingRun(Base):
    """One training of a model version; ``running`` while its process (host, pid) lives
    and beats (``heartbeat_at``)."""

    __tablename__ = "training_runs"
    __table_args__ = (CheckConstraint(one_of("status", RunStatus), name="status"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    status: Mapped[str] = mapped_column(String(20), default=RunStatus.RUNNING.value)
    device: Mapped[str] = mapped_column(String(40), default="cpu")
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    epochs: Mapped[int] = mapped_column(Integer, default=0)
    curve_uri: Mapped[str | None] = mapped_column(String(2000))
    # the process running it (pid reuse is told by its start time, seconds since the epoch)
    host: Mapped[str | None] = mapped_column(String(255))
    pid: Mapped[int | None]
    process_started: Mapped[float | None] = mapped_column(Float)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    failure: Mapped[str | None] = mapped_column(String(1000))  # why it failed, when known


class Metric(Base):
    """One number: per model (and run), dataset version, split, class and step."""

    __tablename__ = "metrics"
    __table_args__ = (Index("ix_metrics_model_name", "model_version_id", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    training_run_id: Mapped[int | None] = mapped_column(ForeignKey("training_runs.id"))
    dataset_version_id: Mapped[int | None] = mapped_column(ForeignKey("dataset_versions.id"))
    split: Mapped[str] = mapped_column(String(5), default="test")
    name: Mapped[str] = mapped_column(String(100))
    class_name: Mapped[str] = mapped_column(String(100), default="")
    step: Mapped[int | None]
    value: Mapped[float] = mapped_column(Float)


class SliceScore(Base):
    """A model's uncertainty score of a slice (higher = more worth a person's time)."""

    __tablename__ = "slice_scores"
    # top-K walks this index from the top in exactly the query's order
    __table_args__ = (
        Index("ix_slice_scores_model_score", "model_version_id", "score", "slice_id"),
    )
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"), primary_key=True)
    slice_id: Mapped[int] = mapped_column(ForeignKey("slices.id"), primary_key=True)
    score: Mapped[float] = mapped_column(Float)
    method: Mapped[str] = mapped_column(String(60), default="")


class ALRound(Base):
    __tablename__ = "al_rounds"
    __table_args__ = (CheckConstraint(one_of("status", RoundStatus), name="status"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    dataset: Mapped[str] = mapped_column(String(200))
    strategy: Mapped[str] = mapped_column(String(60))
    budget: Mapped[int]
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    status: Mapped[str] = mapped_column(String(20), default=RoundStatus.OPEN.value)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


# a region is whole or absent (a NULL beside a value would pass a bare comparison)
REGION_CHECK = (
    "(region_y0 IS NULL AND region_x0 IS NULL AND region_size IS NULL) OR "
    "(region_y0 IS NOT NULL AND region_x0 IS NOT NULL AND region_size IS NOT NULL "
    "AND region_y0 >= 0 AND region_x0 >= 0 AND region_size >= 1)"
)


class RoundItem(Base):
    __tablename__ = "round_items"
    __table_args__ = (
        UniqueConstraint("round_id", "slice_id", name="uq_round_items_round_slice"),
        CheckConstraint(one_of("state", ItemState), name="state"),
        CheckConstraint(REGION_CHECK, name="region"),
        Index("ix_round_items_slice_state", "slice_id", "state"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("al_rounds.id"))
    slice_id: Mapped[int] = mapped_column(ForeignKey("slices.id"))
    score: Mapped[float] = mapped_column(Float)
    rank: Mapped[int]
    ls_task_id: Mapped[int | None]
    state: Mapped[str] = mapped_column(String(20), default=ItemState.PENDING.value)
    annotation_seconds: Mapped[float | None] = mapped_column(Float)
    # the model's mask pre-filled in the task (inline RLE as Annotation.mask_rle), kept to
    # tell how much the annotator changed it
    prediction_rle: Mapped[dict | None] = mapped_column(JSON)
    # a region round's tile of the slice (its plane and index are the slice's): top-left
    # row and column and side in pixels; all None for a whole slice
    region_y0: Mapped[int | None]
    region_x0: Mapped[int | None]
    region_size: Mapped[int | None]


class LabelStudioEvent(Base):
    """One Label Studio annotation event as tomoloop handled it, webhook or polled.

    ``key`` is the annotation id and its update time, so the same event arriving twice
    (webhook and poll, or a retried webhook) is handled once. ``status``: ``stored`` (a
    registry annotation, ``annotation_id``), ``skipped`` (the annotator skipped or
    cancelled), ``rejected`` (not usable; ``reason`` says why).
    """

    __tablename__ = "ls_events"
    __table_args__ = (
        UniqueConstraint("key", name="uq_ls_events_key"),
        CheckConstraint(one_of("status", EventStatus), name="status"),
        CheckConstraint(one_of("via", EventVia), name="via"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(200))
    via: Mapped[str] = mapped_column(String(20))
    action: Mapped[str] = mapped_column(String(40))
    ls_project_id: Mapped[int]
    ls_task_id: Mapped[int]
    ls_annotation_id: Mapped[int]
    status: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(String(1000), default="")
    annotation_id: Mapped[int | None] = mapped_column(ForeignKey("annotations.id"))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Review(Base):
    """An annotator's label sent to the review project: why (``reasons``, comma-separated:
    ``model``, ``annotators``, ``qa`` — see :mod:`tomoloop.active.review`), the model agreement
    that decided it, and its state — ``queued`` (not in Label Studio yet), ``pushing``
    (claimed by a sync at ``claimed_at``), ``pending`` (a review task, ``ls_task_id``),
    ``approved`` / ``corrected`` (the reviewer's label is the tier-expert
    ``expert_annotation_id``), ``skipped``, ``superseded`` (the annotator updated the
    label before it was reviewed; the update is routed afresh).
    """

    __tablename__ = "reviews"
    __table_args__ = (
        UniqueConstraint("annotation_id", name="uq_reviews_annotation_id"),
        CheckConstraint(one_of("state", ReviewState), name="state"),
        Index("ix_reviews_dataset_state", "dataset", "state"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    annotation_id: Mapped[int] = mapped_column(ForeignKey("annotations.id"))
    slice_id: Mapped[int] = mapped_column(ForeignKey("slices.id"))
    dataset: Mapped[str] = mapped_column(String(200))
    reasons: Mapped[str] = mapped_column(String(100))
    model_iou: Mapped[float | None] = mapped_column(Float)
    state: Mapped[str] = mapped_column(String(20), default=ReviewState.QUEUED.value)
    ls_task_id: Mapped[int | None]
    expert_annotation_id: Mapped[int | None] = mapped_column(ForeignKey("annotations.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Agreement(Base):
    """The Dice of one class between two people's labels of one slice: ``kind``
    ``annotators`` (two annotators of one task) or ``review`` (annotator vs reviewer).
    """

    __tablename__ = "agreements"
    __table_args__ = (
        UniqueConstraint(
            "annotation_a_id", "annotation_b_id", "class_name", name="uq_agreements_pair"
        ),
        CheckConstraint(one_of("kind", AGREEMENT_KINDS), name="kind"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    slice_id: Mapped[int] = mapped_column(ForeignKey("slices.id"))
    dataset: Mapped[str] = mapped_column(String(200))
    annotation_a_id: Mapped[int] = mapped_column(ForeignKey("annotations.id"))
    annotation_b_id: Mapped[int] = mapped_column(ForeignKey("annotations.id"))
    kind: Mapped[str] = mapped_column(String(20))
    class_name: Mapped[str] = mapped_column(String(100))
    dice: Mapped[float] = mapped_column(Float)
