"""Training Mask R-CNN on a dataset version: the request, its slices as a COCO folder
(every connected component of an instance phase one instance), training inside the run
lifecycle, COCO AP on the test split (val without one).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from tomoloop.adapters import detectron2
from tomoloop.db.entities import DatasetVersion
from tomoloop.db.registry import NewMetric
from tomoloop.particles.instances import instance_classes, write_coco_folder
from tomoloop.services.context import Log, Services
from tomoloop.services.datasets import dataset_phases, dataset_slices
from tomoloop.services.runs import Run, RunFolder, finish_run, run_folder


@dataclass(frozen=True)
class MaskRCNNPlan:
    """What a Mask R-CNN request trains on, with what, and where it checkpoints."""

    dataset: DatasetVersion
    config: detectron2.MaskRCNNConfig
    request: dict[str, Any]
    folder: RunFolder
    classes: tuple[int, ...]
    names: tuple[str, ...]


@dataclass(frozen=True)
class CocoFolder:
    """The plan's slices written as COCO files per split, and the split AP is measured on."""

    files: dict[str, Path]
    images: Path
    split: str


@dataclass(frozen=True)
class TrainedMaskRCNN:
    """A finished Mask R-CNN training run and its COCO AP (0–1) on ``split``."""

    model_version: int
    training_run: int
    iterations: int
    resumed_after: int
    device: str
    split: str
    instances: list[str]
    scores: dict[str, float]
    checkpoint: str

    def to_dict(self) -> dict[str, Any]:
        head = asdict(self)
        scores, checkpoint = head.pop("scores"), head.pop("checkpoint")
        return {**head, **scores, "checkpoint": checkpoint}


def plan_maskrcnn(
    services: Services,
    dataset_version_id: int,
    config: dict[str, Any] | None,
    instances: tuple[str, ...],
    parent: int | None = None,
) -> MaskRCNNPlan:
    """The request (every option checked) and its run folder; ``instances`` names the
    phases whose particles are instances (default: all but the first phase); ``parent`` a
    registered Mask R-CNN whose weights training starts from (e.g. one trained on an
    earlier scan), of the same depth and norm."""
    dataset = services.registry.dataset_version(dataset_version_id)
    phases = dataset_phases(services, dataset)
    classes = instance_classes(phases, instances)
    mask_config = detectron2.MaskRCNNConfig(**(config or {}))
    if parent is not None:
        check_parent(services, parent, mask_config)
    request = {
        "dataset_version": dataset.id,
        "arch": "maskrcnn",
        "instances": [phases.names[c] for c in classes],
        "train": asdict(mask_config),
        "parent": parent,
    }
    folder = run_folder(services, request)
    return MaskRCNNPlan(dataset, mask_config, request, folder, classes, phases.names)


def check_parent(services: Services, parent: int, config: detectron2.MaskRCNNConfig) -> None:
    """Refuse a start model that is not a Mask R-CNN of ``config``'s depth and norm, or
    that comes with other starting weights.

    Raises:
        Detectron2Error: what does not fit, and the options that would.
    """
    model = services.registry.model(parent)
    if model.architecture != "maskrcnn":
        raise detectron2.Detectron2Error(
            f"--from {parent} is a {model.architecture} model: give a Mask R-CNN's "
            "model version"
        )
    trained = model.config.get("train", {})
    shape = (trained.get("depth"), trained.get("norm"))
    if shape != (config.depth, config.norm):
        raise detectron2.Detectron2Error(
            f"--from {parent} is a ResNet-{shape[0]} {shape[1]} Mask R-CNN: train with "
            f"--depth {shape[0]} --norm {shape[1]}"
        )
    if config.weights:
        raise detectron2.Detectron2Error("give --from or --weights, not both")


def start_weights(services: Services, plan: MaskRCNNPlan) -> detectron2.MaskRCNNConfig:
    """The plan's config, starting from its parent model's checkpoint (verified by
    sha256, written into the run folder) when it names one."""
    parent = plan.request["parent"]
    if parent is None:
        return plan.config
    model = services.registry.model(parent)
    if model.checkpoint_uri is None or model.checkpoint_sha256 is None:
        raise detectron2.Detectron2Error(f"model {parent} has no checkpoint to start from")
    start = plan.folder.path / "start.pt"
    start.write_bytes(services.store.get_bytes(model.checkpoint_uri, model.checkpoint_sha256))
    return replace(plan.config, weights=str(start))


def coco_for_training(services: Services, plan: MaskRCNNPlan) -> CocoFolder:
    """The plan's labelled slices as a COCO folder in the run folder.

    Raises:
        Detectron2Error: no instance on the train slices, or on both test and val; refused
            before anything is registered (a run folder made for it is removed).
    """
    folder = plan.folder.path
    fresh = not folder.exists()
    slices = dataset_slices(services, plan.dataset)
    coco = write_coco_folder(slices, plan.names, plan.classes, folder / "coco")
    split = next((s for s in ("test", "val") if has_instances(coco.get(s))), None)
    if split is None or not has_instances(coco.get("train")):
        if fresh:
            shutil.rmtree(folder)
        raise detectron2.Detectron2Error(
            f"{plan.dataset.name}@{plan.dataset.version} needs instances of "
            f"{', '.join(plan.request['instances'])} on its train slices and on its test or "
            "val slices: check --instances and the labels"
        )
    return CocoFolder(coco, folder / "coco" / "images", split)


def fit_maskrcnn(
    services: Services,
    plan: MaskRCNNPlan,
    coco: CocoFolder,
    run: Run,
    device: torch.device,
    log: Log,
) -> TrainedMaskRCNN:
    """Train in the run folder (resuming from its last checkpoint), measure COCO AP, store
    the checkpoint, and finish the run with the loss curve and AP as metrics; the resume
    points and the COCO copy are removed afterwards."""
    folder, dataset_id = plan.folder.path, plan.dataset.id
    outcome = detectron2.train(
        coco.files["train"], coco.images, start_weights(services, plan), folder / "detectron2",
        device,
        on_iteration=every(50, lambda i, loss: log.info("iteration %d: loss %.4f", i, loss)),
    )  # fmt: skip
    net = detectron2.load(outcome.checkpoint, device)
    scores = detectron2.evaluate(net, coco.files[coco.split], coco.images)
    checkpoint = services.store.put_bytes(outcome.checkpoint, ".pt")
    metrics = [
        NewMetric("loss", loss, "train", step=i, dataset_version_id=dataset_id)
        for i, loss in enumerate(outcome.losses)
    ] + [
        NewMetric(key, value, coco.split, dataset_version_id=dataset_id)
        for key, value in scores.items()
    ]
    finish_run(services, run, metrics, len(outcome.losses), None, checkpoint)
    return TrainedMaskRCNN(
        run.model_id, run.run_id, len(outcome.losses), outcome.resumed_after, str(device),
        coco.split, list(plan.request["instances"]), scores, checkpoint.key,
    )  # fmt: skip


def remove_resume_points(folder: Path) -> None:
    """A finished run's resume points and COCO copy: not needed any more."""
    for done_with in ("detectron2", "coco"):
        shutil.rmtree(folder / done_with, ignore_errors=True)
    (folder / "start.pt").unlink(missing_ok=True)


def has_instances(coco_file: Path | None) -> bool:
    """Whether a COCO file holds a particle (its ``iscrowd`` ignore regions are none)."""
    return coco_file is not None and any(
        not a.get("iscrowd") for a in json.loads(coco_file.read_text())["annotations"]
    )


def every(n: int, report: Callable[[int, float], None]) -> Callable[[int, float], None]:
    """``report`` called on every n-th iteration only."""

    def maybe(iteration: int, loss: float) -> None:
        if iteration % n == 0:
            report(iteration, loss)

    return maybe
