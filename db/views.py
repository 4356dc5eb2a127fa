"""Registry rows as plain JSON-able dicts: what the CLI's ``--json`` listings and the HTTP
API return (one shape for both).
"""

from __future__ import annotations

from tomoloop.db.entities import (
    ALRound,
    DatasetVersion,
    Metric,
    ModelVersion,
    Review,
    TrainingRun,
    Volume,
)
from tomoloop.db.registry import VOLUME_METRIC, Registry


def volume_row(volume: Volume) -> dict:
    voxel = [volume.voxel_z_um, volume.voxel_y_um, volume.voxel_x_um]
    return {
        "id": volume.id,
        "name": volume.name,
        "sha256": volume.sha256,
        "shape": [volume.shape_z, volume.shape_y, volume.shape_x],
        "voxel_size": None if voxel[0] is None else voxel,
        "phases": volume.phases,
    }


def dataset_row(registry: Registry, dataset: DatasetVersion) -> dict:
    return {
        "id": dataset.id,
        "name": dataset.name,
        "version": dataset.version,
        "hash": dataset.content_hash,
        "parent": dataset.parent_id,
        "counts": registry.dataset_counts(dataset.id),
        "labelled_px": registry.dataset_labelled_px(dataset.id),
    }


def _metric_key(metric: Metric, model: ModelVersion, volumes: dict[int, str]) -> str:
    """``split/name[/class]``, with ``@dataset-version`` when the number was measured on
    another dataset version than the model was trained on (it must not hide the other).
    A number of one volume's slices (stored as ``volume:<volume id>/<name>``) shows as
    ``split/volume:<volume name>/name[/class]``.
    """
    name = metric.name
    if name.startswith(VOLUME_METRIC):
        volume_id, _, rest = name.removeprefix(VOLUME_METRIC).partition("/")
        name = f"{VOLUME_METRIC}{volumes.get(int(volume_id), volume_id)}/{rest}"
    key = f"{metric.split}/{name}" + (f"/{metric.class_name}" if metric.class_name else "")
    other = metric.dataset_version_id not in (None, model.dataset_version_id)
    return f"{key}@{metric.dataset_version_id}" if other else key


def model_row(registry: Registry, model: ModelVersion) -> dict:
    """A model version with its final metrics as ``{split/name[/class][@version]: value}``
    (``split/volume:<volume>/name[/class]`` for a volume's own scores)."""
    metrics = [m for m in registry.metrics(model.id) if m.step is None]
    per_volume = any(m.name.startswith(VOLUME_METRIC) for m in metrics)
    volumes = {v.id: v.name for v in registry.volumes()} if per_volume else {}
    return {
        "id": model.id,
        "name": model.name,
        "arch": model.architecture,
        "backend": model.backend,
        "stage": model.stage,
        "dataset_version": model.dataset_version_id,
        "parent": model.parent_id,
        "metrics": {  # final numbers; per-epoch curve points stay in the registry
            _metric_key(m, model, volumes): m.value for m in metrics
        },
    }


def run_row(run: TrainingRun) -> dict:
    """A training run: its model, status (and why it failed), the process running it."""
    return {
        "id": run.id,
        "model": run.model_version_id,
        "status": run.status,
        "failure": run.failure,
        "device": run.device,
        "host": run.host,
        "pid": run.pid,
        "started_at": run.started_at,
        "heartbeat_at": run.heartbeat_at,
        "ended_at": run.ended_at,
        "epochs": run.epochs,
    }


def round_rows(registry: Registry) -> list[dict]:
    """Every active-learning round as :func:`round_row`, oldest first."""
    pixels = registry.round_pixels()
    return [round_row(r, items, pixels[r.id]) for r, items in registry.rounds()]


def round_row(round_: ALRound, items: dict[str, int], pixels: tuple[str, int]) -> dict:
    """An active-learning round with its item count per state, its ``unit`` (``slice`` or
    ``region``; a region round's ``budget`` is in pixels, a slice round's in slices) and
    the pixels people labelled in it (``pixels``: :meth:`Registry.round_pixels`)."""
    unit, labelled_px = pixels
    return {
        "id": round_.id,
        "dataset": round_.dataset,
        "strategy": round_.strategy,
        "unit": unit,
        "budget": round_.budget,
        "model": round_.model_version_id,
        "status": round_.status,
        "items": items,
        "labelled_px": labelled_px,
    }


def review_row(review: Review) -> dict:
    return {
        "id": review.id,
        "slice_id": review.slice_id,
        "state": review.state,
        "reasons": review.reasons,
        "model_iou": None if review.model_iou is None else round(review.model_iou, 4),
        "label": review.annotation_id,
        "expert_label": review.expert_annotation_id,
        "ls_task_id": review.ls_task_id,
    }
