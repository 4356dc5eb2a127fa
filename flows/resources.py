"""What the semantic flows fetch from the registry and the artifact store: the services
from the settings, a dataset version's labelled slices, a registered model's network.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from tomoloop.adapters.artifacts import ArtifactStore
from tomoloop.config import Settings
from tomoloop.db.entities import DatasetVersion, ModelVersion
from tomoloop.db.registry import PoolSlice, Registry, RegistryError
from tomoloop.labels.masks import decode_class_mask, encode_class_mask, merge_by_tier
from tomoloop.labels.phases import PhaseMap
from tomoloop.networks.registry import ModelSpec, load_model
from tomoloop.processes import HEARTBEAT_S, gone_reason, this_process
from tomoloop.training.data import LabelledSlice, SliceRef, load_slices


@dataclass(frozen=True)
class Services:
    registry: Registry
    store: ArtifactStore

    @classmethod
    def from_settings(cls, settings: Settings | None = None, create: bool = True) -> Services:
        """The registry and artifact store of the settings (``create``: see
        :meth:`Registry.from_url`)."""
        settings = settings or Settings()
        return cls(
            Registry.from_url(settings.registry_url, create),
            ArtifactStore(settings.artifact_root),
        )

    def close(self) -> None:
        self.registry.engine.dispose()


def dataset_phases(services: Services, dataset: DatasetVersion) -> PhaseMap:
    """The phase map shared by every volume of a dataset version."""
    return PhaseMap.parse(services.registry.dataset_phases(dataset.id))


def dataset_slices(
    services: Services, dataset: DatasetVersion, weights: dict[str, float] | None = None
) -> dict[str, list[LabelledSlice]]:
    """Every labelled slice of a dataset version, read and decoded, grouped by split.

    Masks stored as artifacts are fetched and verified by sha256. A sparse label is merged
    over the lower-tier labels of its slice (:func:`merged_label`).
    """
    refs = []
    for member in services.registry.dataset_slices(dataset.id):
        mask = mask_document(
            services, member.annotation_id, member.mask_rle, member.mask_uri, member.mask_sha256
        )
        if "labelled" in mask:
            mask = merged_label(services, member.annotation_id, member.tier, mask)
        refs.append(
            SliceRef(
                member.volume_path,
                member.axis,
                member.index,
                mask,
                member.tier,
                member.split,
                member.annotation_id,
                member.instances_rle,
            )
        )
    return load_slices(refs, weights)


def mask_document(
    services: Services,
    annotation_id: int,
    mask_rle: dict | None,
    mask_uri: str | None,
    mask_sha256: str | None,
) -> dict:
    """A semantic label's mask document: inline, or fetched and verified by sha256."""
    if mask_rle is not None:
        return mask_rle
    if mask_uri is None or mask_sha256 is None:
        raise RegistryError(f"annotation {annotation_id} has no mask")
    return json.loads(services.store.get_bytes(mask_uri, mask_sha256))


def merged_label(services: Services, annotation_id: int, tier: int, sparse: dict) -> dict:
    """A sparse label (inline document) merged by tier over the lower-tier labels of its
    slice (:meth:`Registry.lower_labels`): its classes where it is labelled, theirs
    elsewhere; pixels none labels stay unlabelled."""
    lower = [
        (
            a.tier,
            decode_class_mask(mask_document(services, a.id, a.mask_rle, a.mask_uri, a.mask_sha256)),
        )
        for a in services.registry.lower_labels(annotation_id)
    ]
    return encode_class_mask(merge_by_tier([*lower, (tier, decode_class_mask(sparse))]))


def load_registered_model(
    services: Services, model_id: int, device: str = "cpu"
) -> tuple[nn.Module, ModelSpec, ModelVersion]:
    """A registered torch model version, verified by sha256 and rebuilt on ``device``."""
    version = services.registry.model(model_id)
    if version.backend != "torch":
        raise RegistryError(
            f"model {model_id} is a {version.backend} model; this command needs a semantic one"
        )
    if version.checkpoint_uri is None or version.checkpoint_sha256 is None:
        raise RegistryError(
            f"model {model_id} has no checkpoint (its training did not finish): "
            "train it again or pick another model"
        )
    data = services.store.get_bytes(version.checkpoint_uri, version.checkpoint_sha256)
    model, spec = load_model(data, device)
    return model, spec, version


def maskrcnn_version(services: Services, model_id: int) -> ModelVersion:
    """Registered model version ``model_id``, checked to be a trained Mask R-CNN (read
    only: nothing is loaded, so commands check it before they write anything).

    Raises:
        RegistryError: unknown, not a detectron2 model, or without a checkpoint.
    """
    version = services.registry.model(model_id)
    if version.backend != "detectron2":
        raise RegistryError(
            f"model {model_id} is a {version.backend} model; this command needs a Mask R-CNN "
            "(train one with tomoloop train --arch maskrcnn)"
        )
    if version.checkpoint_uri is None or version.checkpoint_sha256 is None:
        raise RegistryError(
            f"model {model_id} has no checkpoint (its training did not finish): "
            "train it again or pick another model"
        )
    return version


def pool_groups(pool: list[PoolSlice]) -> dict[tuple[str, str], dict[int, int]]:
    """Pool slices grouped by (volume path, axis): index → slice id, so each stack is
    opened once.
    """
    groups: dict[tuple[str, str], dict[int, int]] = defaultdict(dict)
    for p in pool:
        groups[(p.volume_path, p.axis)][p.index] = p.slice_id
    return groups


def request_key(request: dict) -> str:
    """A short stable hash of a training request (names its checkpoint folder)."""
    return hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()[:16]


def saved_run(services: Services, folder: Path, request: dict) -> tuple[int, int, str] | None:
    """(model version, run, status) that the request's folder remembers, if this registry
    holds that run for this very request (another registry may reuse the ids).
    """
    marker = folder / "run.json"
    if not marker.exists():
        return None
    saved = json.loads(marker.read_text())
    try:
        model = services.registry.model(saved["model_version"])
    except RegistryError:
        return None
    if model.config != json.loads(json.dumps(request)):
        return None
    for run in services.registry.training_runs(model.id):
        if run.id == saved["training_run"]:
            return model.id, run.id, run.status
    return None


def open_run(
    services: Services,
    folder: Path,
    request: dict,
    name: str,
    arch: str,
    backend: str,
    device: str,
) -> tuple[int, int]:
    """The model version and running training run of this request: the interrupted ones
    the folder remembers (a resumed run keeps its identity), or new ones.
    """
    registry = services.registry
    registry.fail_gone_runs(gone_reason)  # a killed run of this request may resume below
    owner = this_process()
    saved = saved_run(services, folder, request)
    if saved is not None:
        model_id, run_id, _ = saved
        registry.resume_training(run_id, owner)
        start_heartbeat(registry, run_id)
        return model_id, run_id
    folder.mkdir(parents=True, exist_ok=True)
    with registry.atomic():
        model_id = registry.register_model(
            name,
            arch,
            backend,
            request["dataset_version"],
            config=request,
            parent_id=request["parent"],
        )
        run_id = registry.start_training(model_id, device, owner)
    temp = folder / ".run.json"
    temp.write_text(json.dumps({"model_version": model_id, "training_run": run_id}))
    temp.replace(folder / "run.json")
    start_heartbeat(registry, run_id)
    return model_id, run_id


def start_heartbeat(registry: Registry, run_id: int, every_s: float = HEARTBEAT_S) -> None:
    """Beat for a run every ``every_s`` seconds from a daemon thread, until the run is no
    longer ``running`` (it ends with the process, which is what a heartbeat is for)."""

    def beat() -> None:
        while True:
            time.sleep(every_s)
            try:
                if not registry.beat(run_id):
                    return
            except Exception:  # a database blip: the next beat tries again
                continue

    threading.Thread(target=beat, name=f"heartbeat-run-{run_id}", daemon=True).start()


def run_folder(services: Services, home: Path, request: dict) -> tuple[Path, dict | None]:
    """The request's checkpoint folder under ``home/runs``, and — when a run of this very
    request already finished — the flow's answer for it (``model_version``,
    ``already_trained``), so a repeated request trains nothing.
    """
    folder = home / "runs" / request_key(request)
    saved = saved_run(services, folder, request)
    if saved is not None and saved[2] == "finished":
        return folder, {"model_version": saved[0], "resumed": False, "already_trained": True}
    return folder, None
