"""What the registry returns: frozen copies of its rows (ORM rows stay inside ``db/``), and
the rows callers hand it to record (``New…``). Fields are the table's columns (see
:mod:`tomoloop.db.models` for what each holds); state columns come back as their enums.

Assigning to a field raises :class:`dataclasses.FrozenInstanceError`: a change goes
through a :class:`tomoloop.db.registry.Registry` method.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, ClassVar

from tomoloop.db.states import (
    EventStatus,
    EventVia,
    ItemState,
    Kind,
    ReviewState,
    RoundStatus,
    RunStatus,
    Stage,
)
from tomoloop.labels.tiers import Tier


@dataclass(frozen=True)
class Volume:
    """One CT / FIB-SEM stack: shape (z, y, x) in voxels, voxel size in µm."""

    id: int
    name: str
    path: str
    sha256: str
    shape_z: int
    shape_y: int
    shape_x: int
    dtype: str
    voxel_z_um: float | None
    voxel_y_um: float | None
    voxel_x_um: float | None
    modality: str
    material: str
    phases: str  # "pore=0,nmc=1,cbd=2"
    created_at: datetime


@dataclass(frozen=True)
class Slice:
    """(volume, axis, index): the unit that is scored, selected and annotated."""

    id: int
    volume_id: int
    axis: str
    index: int


@dataclass(frozen=True)
class Annotation:
    """One label of one slice (``mask_rle`` forms: :class:`tomoloop.db.models.Annotation`)."""

    enums: ClassVar[dict[str, Any]] = {"tier": Tier, "kind": Kind}
    id: int
    slice_id: int
    tier: Tier
    kind: Kind
    source: str
    model_version_id: int | None
    ls_task_id: int | None
    ls_annotation_id: int | None
    author: str
    lead_time_s: float | None
    mask_uri: str | None
    mask_sha256: str | None
    mask_rle: dict | None
    labelled_px: int | None
    created_at: datetime


@dataclass(frozen=True)
class DatasetVersion:
    """An immutable, content-hashed set of annotations; ``artifacts`` maps a name to
    ``{"uri": ..., "sha256": ...}``."""

    id: int
    name: str
    version: int
    content_hash: str
    parent_id: int | None
    artifacts: dict
    created_at: datetime


@dataclass(frozen=True)
class ModelVersion:
    """A trained model: architecture, backend, config, lineage, checkpoint, stage."""

    enums: ClassVar[dict[str, Any]] = {"stage": Stage}
    id: int
    name: str
    architecture: str
    backend: str
    config: dict
    parent_id: int | None
    dataset_version_id: int | None
    checkpoint_uri: str | None
    checkpoint_sha256: str | None
    stage: Stage
    created_at: datetime


@dataclass(frozen=True)
class TrainingRun:
    """One training of a model version and the process (host, pid) that runs it."""

    enums: ClassVar[dict[str, Any]] = {"status": RunStatus}
    id: int
    model_version_id: int
    status: RunStatus
    device: str
    started_at: datetime
    ended_at: datetime | None
    epochs: int
    curve_uri: str | None
    host: str | None
    pid: int | None
    process_started: float | None  # seconds since the epoch
    heartbeat_at: datetime | None
    failure: str | None


@dataclass(frozen=True)
class Metric:
    """One number: per model (and run), dataset version, split, class and step."""

    id: int
    model_version_id: int
    training_run_id: int | None
    dataset_version_id: int | None
    split: str
    name: str
    class_name: str
    step: int | None
    value: float


@dataclass(frozen=True)
class ALRound:
    """An active-learning round: strategy, budget and the model that scored."""

    enums: ClassVar[dict[str, Any]] = {"status": RoundStatus}
    id: int
    dataset: str
    strategy: str
    budget: int
    model_version_id: int | None
    status: RoundStatus
    created_at: datetime


@dataclass(frozen=True)
class RoundItem:
    """A slice chosen in a round, its Label Studio task and the prediction shown in it; in a
    region round the tile of the slice to label (top-left ``region_y0``, ``region_x0`` and
    side ``region_size`` in pixels of the slice's image; all None for a whole slice)."""

    enums: ClassVar[dict[str, Any]] = {"state": ItemState}
    id: int
    round_id: int
    slice_id: int
    score: float
    rank: int
    ls_task_id: int | None
    state: ItemState
    annotation_seconds: float | None
    prediction_rle: dict | None
    region_y0: int | None = None
    region_x0: int | None = None
    region_size: int | None = None

    @property
    def region(self) -> tuple[int, int, int] | None:
        """``(y0, x0, size)`` of the item's tile, None for a whole slice."""
        if self.region_size is None or self.region_y0 is None or self.region_x0 is None:
            return None
        return self.region_y0, self.region_x0, self.region_size


@dataclass(frozen=True)
class Review:
    """An annotator's label sent to a second person, and where that stands."""

    enums: ClassVar[dict[str, Any]] = {"state": ReviewState}
    id: int
    annotation_id: int
    slice_id: int
    dataset: str
    reasons: str  # comma-separated: model, annotators, qa
    model_iou: float | None
    state: ReviewState
    ls_task_id: int | None
    expert_annotation_id: int | None
    created_at: datetime
    claimed_at: datetime | None
    resolved_at: datetime | None


@dataclass(frozen=True)
class LabelStudioEvent:
    """A Label Studio annotation event as tomoloop handled it."""

    enums: ClassVar[dict[str, Any]] = {"status": EventStatus, "via": EventVia}
    id: int
    key: str
    via: EventVia
    action: str
    ls_project_id: int
    ls_task_id: int
    ls_annotation_id: int
    status: EventStatus
    reason: str
    annotation_id: int | None
    received_at: datetime


@dataclass(frozen=True)
class NewEvent:
    """A handled Label Studio event to record (:meth:`Registry.record_ls_event`)."""

    key: str  # "<annotation id>@<updated at>"
    via: EventVia
    action: str
    ls_project_id: int
    ls_task_id: int
    ls_annotation_id: int
    status: EventStatus
    reason: str = ""
    annotation_id: int | None = None


@dataclass(frozen=True)
class NewAgreement:
    """The Dice of one class between two people's labels of one slice; ``kind`` is a key
    of :data:`tomoloop.active.review.AGREEMENT_KINDS`."""

    slice_id: int
    dataset: str
    annotation_a_id: int
    annotation_b_id: int
    kind: str
    class_name: str
    dice: float


_ENTITIES: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        Volume,
        Slice,
        Annotation,
        DatasetVersion,
        ModelVersion,
        TrainingRun,
        Metric,
        ALRound,
        RoundItem,
        Review,
        LabelStudioEvent,
    )
}


def frozen(row: Any) -> Any:
    """The frozen entity of an ORM row (of the same class name), its states as enums."""
    cls = _ENTITIES[type(row).__name__]
    values = {f.name: getattr(row, f.name) for f in fields(cls)}
    for name, enum_ in getattr(cls, "enums", {}).items():
        values[name] = enum_(values[name])
    return cls(**values)


def frozen_all(rows: Iterable[Any]) -> list[Any]:
    """:func:`frozen` of each row, in order."""
    return [frozen(row) for row in rows]
