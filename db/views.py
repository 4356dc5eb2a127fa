"""Registry rows as plain JSON-able dicts: what the CLI's ``--json`` listings and the HTTP
API return (one shape for both).
"""

from __future__ import annotations

from tomoloop.db.models import ALRound, DatasetVersion, ModelVersion, Volume
from tomoloop.db.registry import Registry


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
    }


def model_row(registry: Registry, model: ModelVersion) -> dict:
    """A model version with its final metrics as ``{split/name[/class]: value}``."""
    return {
        "id": model.id,
        "name": model.name,
        "arch": model.architecture,
        "backend": model.backend,
        "stage": model.stage,
        "dataset_version": model.dataset_version_id,
        "parent": model.parent_id,
        "metrics": {
            f"{m.split}/{m.name}" + (f"/{m.class_name}" if m.class_name else ""): m.value
            for m in registry.metrics(model.id)
            if m.step is None  # final numbers; per-epoch curve points stay in the registry
        },
    }


def round_row(round_: ALRound, items: dict[str, int]) -> dict:
    """An active-learning round with its item count per state."""
    return {
        "id": round_.id,
        "dataset": round_.dataset,
        "strategy": round_.strategy,
        "budget": round_.budget,
        "model": round_.model_version_id,
        "status": round_.status,
        "items": items,
    }
