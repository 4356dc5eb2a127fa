"""Mask R-CNN flows (Daemi et al. 2022; docs/references.md): train a particle detector on a dataset
version, and find, measure and classify the 3D particles of a volume with it.

train-maskrcnn:

load the labelled slices → write them as a COCO folder (every connected component of an
instance phase one instance) → register a candidate model version (backend detectron2)
and open a training run → train with checkpoints → COCO AP on the test split → store
the checkpoint as an artifact, the loss curve and AP as metrics → close the run.

The same request after a crash resumes from the last checkpoint; after success it
returns the model it made.

particles: predict on z, y and x slices → fuse, clean, watershed → measure particles,
flag slice artefacts and partial particles → optionally score each kept particle with a
registered flaw classifier → write labels, particles.csv, the size distribution, the
flaw volume and a summary into a new folder (all or nothing).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from prefect import flow, get_run_logger

from tomoloop.adapters import detectron2
from tomoloop.coco.convert import check_out
from tomoloop.config import Settings
from tomoloop.db.entities import ModelVersion
from tomoloop.db.registry import NewMetric, PoolSlice, RegistryError
from tomoloop.flows.resources import (
    Services,
    dataset_phases,
    dataset_slices,
    maskrcnn_version,
    open_run,
    pool_groups,
    run_folder,
)
from tomoloop.inference.predict import normalise, predict_slice
from tomoloop.networks.registry import ModelSpec
from tomoloop.particles.flaws import (
    FlawNet,
    FlawTrainConfig,
    flaw_volume,
    is_flawed,
    load_classifier,
    particle_scores,
    read_examples,
    save_classifier,
    split_examples,
    train_classifier,
)
from tomoloop.particles.instances import (
    grey_uint8,
    instance_classes,
    particle_category,
    particle_disagreement,
    particle_mask,
    write_coco_folder,
)
from tomoloop.particles.reassembly import (
    ReassemblyOptions,
    VolumeError,
    analyse,
    kept_labels,
    particle_rows,
    particle_summary,
    reassemble,
    write_particle_report,
)
from tomoloop.stacks.tiff import open_stack, percentile_window
from tomoloop.training.trainer import resolve_device


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
        torch_device = resolve_device(device)  # every option before the run folder is made
        request = {
            "dataset_version": dataset.id,
            "arch": "maskrcnn",
            "instances": [phases.names[c] for c in classes],
            "train": asdict(mask_config),
            "parent": None,
        }
        folder, done = run_folder(services, settings.home, request)
        if done is not None:
            log.info("this request already trained model %s", done["model_version"])
            return done
        slices = dataset_slices(services, dataset)
        fresh = not folder.exists()
        coco = write_coco_folder(slices, phases.names, classes, folder / "coco")
        split = next((s for s in ("test", "val") if _has_instances(coco.get(s))), None)
        if split is None or not _has_instances(coco.get("train")):
            if fresh:  # refused before anything is registered: no run folder stays either
                shutil.rmtree(folder)
            raise detectron2.Detectron2Error(
                f"{dataset.name}@{dataset.version} needs instances of "
                f"{', '.join(request['instances'])} on its train slices and on its test or "
                "val slices: check --instances and the labels"
            )
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
                on_iteration=_every(
                    50, lambda i, loss: log.info("iteration %d: loss %.4f", i, loss)
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
        for done_with in ("detectron2", "coco"):  # resume points and the COCO copy: not needed
            shutil.rmtree(folder / done_with, ignore_errors=True)
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


@flow(name="particles")
def particles(
    gray: str,
    model_id: int,
    out_dir: str,
    axes: str = "zyx",
    voxel_size: tuple[float, float, float] | None = None,
    flaw_model_id: int | None = None,
    options: dict | None = None,
    bin_um: float = 0.5,
    overwrite: bool = False,
    device: str = "auto",
    phase: str | None = None,
) -> dict:
    """3D particles of a grey stack with a registered Mask R-CNN; the summary (also in
    ``out_dir/summary.json``). ``options`` hold :class:`tomoloop.particles.ReassemblyOptions`
    fields; ``bin_um`` is the size-distribution bin in µm; ``phase`` the model category
    that makes the particles (needed when it finds more than one).
    """
    log = get_run_logger()
    reassembly = ReassemblyOptions.from_options(options or {})
    if bin_um <= 0:
        raise VolumeError(f"bin {bin_um} µm: the size-distribution bin must be > 0")
    check_out(Path(out_dir), overwrite)  # before the work, not after it
    torch_device = resolve_device(device)
    services = Services.from_settings()
    try:
        net, _ = load_registered_maskrcnn(services, model_id, torch_device)
        classifier = (
            None
            if flaw_model_id is None
            else load_registered_flaw_classifier(services, flaw_model_id, torch_device)
        )
    finally:
        services.close()
    with open_stack(gray, voxel_size) as stack:
        volume = grey_uint8(normalise(stack.read(), percentile_window(stack)))
        voxel = stack.voxel_size or (1.0, 1.0, 1.0)
    if stack.voxel_size is None:
        log.warning("%s has no voxel size (give --voxel-size): lengths are in voxels", gray)
    category = particle_category(net.categories, phase)
    log.info("predicting %s slices of %s", "/".join(axes), Path(gray).name)
    masks = detectron2.axis_masks(net, volume, tuple(axes), classes=[category])
    labels = reassemble(masks, reassembly)
    analysis = analyse(labels, voxel)
    boxes = {p.id: (p.z0, p.z1) for p in analysis.kept}
    scores = (
        None
        if classifier is None
        else particle_scores(classifier, volume, labels, boxes, torch_device)
    )
    summary = {
        "gray": gray,
        "model_version": model_id,
        "flaw_model_version": flaw_model_id,
        "voxel_size_um": list(voxel),
        **particle_summary(analysis, scores, bin_um),
    }
    kept = kept_labels(labels, analysis)
    flaws = (
        None
        if scores is None
        else flaw_volume(volume, kept, {pid for pid, s in scores.items() if is_flawed(s)})
    )
    out = write_particle_report(
        Path(out_dir), kept, voxel, particle_rows(analysis, scores), summary, flaws, overwrite
    )
    log.info("%d of %d particles kept; written to %s", summary["kept"], summary["particles"], out)
    return {**summary, "out_dir": str(out)}


@flow(name="train-flaw-classifier")
def train_flaw_classifier(
    slices_dir: str,
    name: str = "flaws",
    config: dict | None = None,
    val_fraction: float = 0.2,
    device: str = "auto",
) -> dict:
    """Train the flaw classifier on ``slices_dir/flawed/*.png`` and ``…/unflawed/*.png`` (grey
    slices of masked particles, as Daemi et al. 2022, §4, trained on) and register it (architecture
    flawnet); ``{"model_version": id, "val_accuracy": …}``.
    """
    log = get_run_logger()
    flaw_config = FlawTrainConfig(**(config or {}))
    train, val = split_examples(*read_examples(Path(slices_dir)), val_fraction, flaw_config.seed)
    torch_device = resolve_device(device)
    result = train_classifier(
        train,
        val,
        flaw_config,
        torch_device,
        on_epoch=lambda e, loss, acc: log.info(
            "epoch %d: loss %.4f, val accuracy %.3f", e, loss, acc
        ),
    )
    services = Services.from_settings()
    try:
        checkpoint = services.store.put_bytes(save_classifier(result.net, flaw_config), ".pt")
        request = {"slices": slices_dir, "train": asdict(flaw_config), "val_fraction": val_fraction}
        model_id = services.registry.register_model(
            name,
            "flawnet",
            "torch",
            None,
            config=request,
            checkpoint_uri=checkpoint.key,
            checkpoint_sha256=checkpoint.sha256,
            metrics=[NewMetric("accuracy", result.val_accuracy, "val")],
        )
    finally:
        services.close()
    return {
        "model_version": model_id,
        "val_accuracy": result.val_accuracy,
        "epochs": result.epochs,
        "train_slices": len(train[0]),
        "val_slices": len(val[0]),
        "checkpoint": checkpoint.key,
    }


def disagreement_scores(
    services: Services,
    pool: list[PoolSlice],
    semantic: torch.nn.Module,
    spec: ModelSpec,
    instance_id: int,
    device: torch.device,
) -> dict[int, float]:
    """Per pool slice id, 1 − Dice of the registered Mask R-CNN's particles and the
    semantic model's prediction of the same phases.
    """
    net, _ = load_registered_maskrcnn(services, instance_id, device)
    missing = [c for c in net.categories if c not in spec.class_names]
    if missing:
        raise RegistryError(
            f"Mask R-CNN {instance_id} finds {missing[0]!r}, which the semantic model "
            f"(classes {', '.join(spec.class_names)}) does not predict"
        )
    particle_classes = [spec.class_names.index(c) for c in net.categories]
    scores = {}
    for (path, axis), ids in pool_groups(pool).items():
        with open_stack(path) as stack:
            window = percentile_window(stack)
            for index, raw in stack.iter_slices(axis, sorted(ids)):
                image = normalise(raw, window)
                probs = predict_slice(semantic, image, spec.tile, spec.tile // 4, 8, device)
                found = detectron2.predict(net, [grey_uint8(image)])[0]
                scores[ids[index]] = particle_disagreement(
                    np.isin(probs.argmax(0), particle_classes),
                    particle_mask(found, image.shape),
                )
    return scores


def load_registered_flaw_classifier(
    services: Services, model_id: int, device: torch.device
) -> FlawNet:
    """A registered flaw classifier (architecture flawnet), verified by sha256."""
    version = services.registry.model(model_id)
    if (
        version.architecture != "flawnet"
        or version.checkpoint_uri is None
        or version.checkpoint_sha256 is None
    ):
        raise RegistryError(
            f"model {model_id} is not a trained flaw classifier: train one with "
            "tomoloop flaws train"
        )
    data = services.store.get_bytes(version.checkpoint_uri, version.checkpoint_sha256)
    return load_classifier(data, device)


def load_registered_maskrcnn(
    services: Services, model_id: int, device: torch.device
) -> tuple[detectron2.MaskRCNN, ModelVersion]:
    """A registered Mask R-CNN version, verified by sha256, on ``device``."""
    version = maskrcnn_version(services, model_id)
    data = services.store.get_bytes(version.checkpoint_uri, version.checkpoint_sha256)
    return detectron2.load(data, device), version


def _has_instances(coco_file: Path | None) -> bool:
    """Whether a COCO file holds a particle (its ``iscrowd`` ignore regions are none)."""
    return coco_file is not None and any(
        not a.get("iscrowd") for a in json.loads(coco_file.read_text())["annotations"]
    )


def _every(n: int, report: Callable[[int, float], None]) -> Callable[[int, float], None]:
    """``report`` called on every n-th iteration only."""

    def maybe(iteration: int, loss: float) -> None:
        if iteration % n == 0:
            report(iteration, loss)

    return maybe
