"""Model versions, their training runs (with the process that runs each) and metrics,
promotion to champion, and lineage.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from tomoloop.db import entities
from tomoloop.db.entities import frozen, frozen_all
from tomoloop.db.models import (
    Annotation,
    DatasetMember,
    Metric,
    ModelVersion,
    Slice,
    TrainingRun,
    utcnow,
)
from tomoloop.db.registry.datasets import _count_key
from tomoloop.db.registry.store import RegistryError, Store
from tomoloop.db.states import (
    RunStatus,
    Stage,
)
from tomoloop.names import check_name
from tomoloop.processes import ProcessId

VOLUME_METRIC = "volume:"  # the name prefix of a number of one volume: volume:<id>/<name>


@dataclass(frozen=True)
class NewMetric:
    """One number to record. ``name`` is the quantity (``mIoU``, ``iou`` …) over the whole
    split, or ``volume:<volume id>/<quantity>`` over one volume's slices of it."""

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


class ModelStore(Store):
    """Model versions, training runs and metrics."""

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

    def runs(self) -> list[entities.TrainingRun]:
        """Every training run, oldest first."""
        with self.session() as s:
            return frozen_all(s.scalars(select(TrainingRun).order_by(TrainingRun.id)))

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

    def training_runs(self, model_id: int) -> list[entities.TrainingRun]:
        with self.session() as s:
            return frozen_all(
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

    def model(self, model_id: int) -> entities.ModelVersion:
        return self._get(ModelVersion, model_id, "model version")

    def models(self) -> list[entities.ModelVersion]:
        with self.session() as s:
            return frozen_all(s.scalars(select(ModelVersion).order_by(ModelVersion.id)))

    def metrics(self, model_id: int) -> list[entities.Metric]:
        with self.session() as s:
            return frozen_all(
                s.scalars(
                    select(Metric).where(Metric.model_version_id == model_id).order_by(Metric.id)
                )
            )

    def champion(self, name: str) -> entities.ModelVersion | None:
        with self.session() as s:
            found = s.scalar(
                select(ModelVersion).where(
                    ModelVersion.name == name, ModelVersion.stage == Stage.CHAMPION
                )
            )
        return None if found is None else frozen(found)

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
                    select(
                        Annotation.kind,
                        Annotation.tier,
                        (func.coalesce(Annotation.labelled_px, -1) == 0).label("empty"),
                        Slice.volume_id,
                    )
                    .join(DatasetMember, DatasetMember.annotation_id == Annotation.id)
                    .join(Slice, Slice.id == Annotation.slice_id)
                    .where(DatasetMember.dataset_version_id == model.dataset_version_id)
                    .subquery()
                )
                for kind, tier, empty, count in s.execute(
                    select(members.c.kind, members.c.tier, members.c.empty, func.count()).group_by(
                        members.c.kind, members.c.tier, members.c.empty
                    )
                ):
                    key = _count_key(kind, tier, bool(empty))
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
