"""Train a Mask R-CNN on a dataset version and register it (seed 004's particle detector).

load the labelled slices → write them as a COCO folder (every connected component of an
instance phase one instance) → register a candidate model version (backend detectron2)
and open a training run → train with checkpoints → COCO AP on the test split → store
the checkpoint as an artifact, the loss curve and AP as metrics → close the run.

The same request after a crash resumes from the last checkpoint; after success it
returns the model it made.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import asdict

import torch
from prefect import flow, get_run_logger

from tomoloop.adapters import detectron2
from tomoloop.config import Settings
from tomoloop.db.models import ModelVersion
from tomoloop.db.registry import NewMetric, RegistryError
from tomoloop.flows.resources import (
    Services,
    dataset_phases,
    dataset_slices,
    finished_model,
    open_run,
    request_key,
)
from tomoloop.instances import instance_classes, write_coco_folder
from tomoloop.training import resolve_device


@flow(name="train-maskrcnn")
def train_maskrcnn(
    dataset_version_id: int,
    name: str | None = None,
    config: dict | None = None,
    instances: tuple[str, ...] = (),
    device: str = "auto",
) -> dict:
    """Train Mask R-CNN on a dataset version; ``{"model_version": id, "segm_AP": …}``.

    ``config`` holds :class:`tomoloop.adapters.detectron2.MaskRCNNConfig` fields;
    ``instances`` names the phases whose particles are instances (default: all but the
    first phase).
    """
    log = get_run_logger()
    settings = Settings()
    services = Services.from_settings(settings)
    registry, store = services.registry, services.store
    try:
        dataset = registry.dataset_version(dataset_version_id)
        phases = dataset_phases(services, dataset)
        classes = instance_classes(phases, instances)
        mask_config = detectron2.MaskRCNNConfig(**(config or {}))
        request = {
            "dataset_version": dataset.id,
            "arch": "maskrcnn",
            "instances": [phases.names[c] for c in classes],
            "train": asdict(mask_config),
            "parent": None,
        }
        folder = settings.home / "runs" / request_key(request)
        done = finished_model(services, folder, request)
        if done is not None:
            log.info("this request already trained model %s", done)
            return {"model_version": done, "resumed": False, "already_trained": True}
        slices = dataset_slices(services, dataset)
        coco = write_coco_folder(slices, phases.names, classes, folder / "coco")
        split = "test" if "test" in coco else "val"
        if "train" not in coco or split not in coco:
            raise detectron2.Detectron2Error(
                f"{dataset.name}@{dataset.version} needs train and val or test slices"
            )
        torch_device = resolve_device(device)
        model_id, run_id = open_run(
            services,
            folder,
            request,
            name or dataset.name,
            "maskrcnn",
            "detectron2",
            str(torch_device),
        )
        try:
            outcome = detectron2.train(
                coco["train"],
                folder / "coco" / "images",
                mask_config,
                folder / "detectron2",
                torch_device,
                on_iteration=lambda i, loss: (
                    log.info("iteration %d: loss %.4f", i, loss) if i % 50 == 0 else None
                ),
            )
            net = detectron2.load(outcome.checkpoint, torch_device)
            scores = detectron2.evaluate(net, coco[split], folder / "coco" / "images")
            checkpoint = store.put_bytes(outcome.checkpoint, ".pt")
            metrics = [
                NewMetric("loss", loss, "train", step=i, dataset_version_id=dataset.id)
                for i, loss in enumerate(outcome.losses)
            ] + [
                NewMetric(key, value, split, dataset_version_id=dataset.id)
                for key, value in scores.items()
            ]
            with registry.atomic():
                registry.add_metrics(model_id, metrics, run_id)
                registry.update_training(
                    run_id,
                    "finished",
                    len(outcome.losses),
                    None,
                    (checkpoint.key, checkpoint.sha256),
                )
        except BaseException:
            registry.update_training(run_id, "failed")
            raise
        shutil.rmtree(folder / "detectron2", ignore_errors=True)  # resume points, no longer needed
        log.info("model %s: %s segm AP %.4f", model_id, split, scores["segm_AP"])
        return {
            "model_version": model_id,
            "training_run": run_id,
            "iterations": len(outcome.losses),
            "resumed_after": outcome.resumed_after,
            "device": str(torch_device),
            "split": split,
            "instances": request["instances"],
            **scores,
            "checkpoint": checkpoint.key,
        }
    finally:
        services.close()


def load_registered_maskrcnn(
    services: Services, model_id: int, device: torch.device
) -> tuple[detectron2.MaskRCNN, ModelVersion]:
    """A registered Mask R-CNN version, verified by sha256, on ``device``."""
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
    data = services.store.get_bytes(version.checkpoint_uri, version.checkpoint_sha256)
    return detectron2.load(data, device), version


def _every(n: int, report: Callable[[int, float], None]) -> Callable[[int, float], None]:
    """``report`` called on every n-th iteration only."""

    def maybe(iteration: int, loss: float) -> None:
        if iteration % n == 0:
            report(iteration, loss)

    return maybe
