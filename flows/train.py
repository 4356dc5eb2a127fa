"""Train a semantic network on a dataset version and register it.

load the labelled slices → build the network (or fine-tune a registered parent) →
register a candidate model version and open a training run → train with per-epoch
checkpoints → evaluate on the test split → store checkpoint and learning curve as
artifacts, the curve and scores as metrics → close the run.

Running the same request again after a crash resumes from the last finished epoch (the
checkpoint folder is keyed by the request); after success it returns the model it made.
"""

from __future__ import annotations

import math
from dataclasses import asdict, replace

import torch
from prefect import flow, get_run_logger

from tomoloop.config import Settings
from tomoloop.db.registry import NewMetric, RegistryError
from tomoloop.flows.resources import (
    Services,
    dataset_phases,
    dataset_slices,
    load_registered_model,
    open_run,
    run_folder,
)
from tomoloop.labels.phases import PhaseMap
from tomoloop.names import check_name
from tomoloop.networks.registry import ModelSpec, freeze, save_model, transfer_weights
from tomoloop.outputs import writing
from tomoloop.scratch import scratch_dir
from tomoloop.training.data import Augmentation, check_slices, parse_tier_weights
from tomoloop.training.evaluation import Evaluation, evaluate
from tomoloop.training.trainer import (
    EpochRecord,
    TrainConfig,
    plot_learning_curve,
    resolve_device,
    train,
)


def curve_metrics(history: list[EpochRecord], dataset_version_id: int) -> list[NewMetric]:
    """The learning curve as metrics, one per epoch (``step``) and quantity."""
    return [
        NewMetric(name, value, split, step=r.epoch, dataset_version_id=dataset_version_id)
        for r in history
        for name, value, split in (
            ("loss", r.train_loss, "train"),
            ("mIoU", r.val_miou, "val"),
            ("mDSC", r.val_mdsc, "val"),
        )
    ]


def evaluation_metrics(
    result: Evaluation, class_names: tuple[str, ...], split: str, dataset_version_id: int
) -> list[NewMetric]:
    """Evaluation scores as metrics: overall, then per class (IoU, Dice, volume fraction),
    and the measured class's in-plane tortuosity (predicted and gold) when finite.
    """
    overall = result.as_dict(class_names)
    per_class = overall.pop("per_class")
    tortuosity = overall.pop("tortuosity", None)
    metrics = [
        NewMetric(name, value, split, dataset_version_id=dataset_version_id)
        for name, value in overall.items()
    ]
    for name, values in per_class.items():
        metrics.extend(
            NewMetric(key, value, split, class_name=name, dataset_version_id=dataset_version_id)
            for key, value in values.items()
        )
    if tortuosity is not None:
        metrics.extend(
            NewMetric(key, tortuosity[part], split, class_name=tortuosity["class"],
                      dataset_version_id=dataset_version_id)
            for key, part in (("tortuosity_x", "predicted"), ("tortuosity_x_truth", "truth"))
            if math.isfinite(tortuosity[part])
        )  # fmt: skip
    return metrics


@flow(name="train")
def train_semantic(
    dataset_version_id: int,
    arch: str = "unet",
    name: str | None = None,
    config: dict | None = None,
    options: dict | None = None,
    device: str = "auto",
    parent: int | None = None,
    freeze_prefixes: tuple[str, ...] = (),
    tier_weights: str = "",
) -> dict:
    """Train ``arch`` on a dataset version; ``{"model_version": id, ...}``.

    ``config`` holds :class:`tomoloop.training.TrainConfig` fields (``augmentation`` as a
    dict of :class:`tomoloop.training.Augmentation` fields); ``options`` go to the network.
    """
    if name is not None:
        check_name(name, "model name")
    log = get_run_logger()
    settings = Settings()
    services = Services.from_settings(settings)
    registry, store = services.registry, services.store
    try:
        dataset = registry.dataset_version(dataset_version_id)
        phases = dataset_phases(services, dataset)
        train_config = _train_config(config or {}, phases)
        request = {
            "dataset_version": dataset.id,
            "arch": arch,
            "options": options or {},
            "train": asdict(train_config),
            "parent": parent,
            "freeze": list(freeze_prefixes),
            "tier_weights": tier_weights,
        }
        folder, done = run_folder(services, settings.home, request)
        if done is not None:
            log.info("this request already trained model %s", done["model_version"])
            return done
        slices = dataset_slices(services, dataset, parse_tier_weights(tier_weights))
        check_slices(slices["train"], len(phases), "train")  # before anything is registered
        check_slices(slices["val"], len(phases), "val")
        torch.manual_seed(train_config.seed)  # --seed fixes the initial weights too
        spec = ModelSpec(arch, 1, len(phases), options or {}, phases.names, train_config.patch)
        model = spec.build()
        if parent is not None:
            parent_model, _, _ = load_registered_model(services, parent)
            fresh = transfer_weights(model, parent_model.state_dict())
            log.info("fine-tuning from model %s; %d tensors start fresh", parent, len(fresh))
        frozen = freeze(model, tuple(freeze_prefixes))
        torch_device = resolve_device(device)
        with writing("the run folder", folder):
            model_id, run_id = open_run(
                services, folder, request, name or dataset.name, arch, "torch", str(torch_device)
            )
        try:
            with writing("the run folder", folder):
                result = train(
                    model,
                    slices["train"],
                    slices["val"],
                    len(phases),
                    train_config,
                    folder,
                    torch_device,
                    on_epoch=lambda r: log.info(
                        "epoch %d: loss %.4f, val mIoU %.4f", r.epoch, r.train_loss, r.val_miou
                    ),
                )
            split = "test" if slices["test"] else "val"
            scored = evaluate(
                model, slices[split], len(phases), spec.tile, spec.tile // 4, torch_device
            )
            checkpoint = store.put_bytes(save_model(model, spec), ".pt")
            with scratch_dir(settings.home, "tomoloop-train") as tmp:
                curve = store.put_file(plot_learning_curve(result.history, tmp / "c.png"))
            with registry.atomic():
                registry.add_metrics(model_id, curve_metrics(result.history, dataset.id), run_id)
                registry.add_metrics(
                    model_id, evaluation_metrics(scored, phases.names, split, dataset.id), run_id
                )
                registry.update_training(
                    run_id,
                    "finished",
                    len(result.history),
                    curve.key,
                    (checkpoint.key, checkpoint.sha256),
                )
        except BaseException:
            registry.update_training(run_id, "failed")
            raise
        (folder / "last.pt").unlink(missing_ok=True)
        log.info("model %s: %s mIoU %.4f", model_id, split, scored.scores.miou)
        summary = scored.as_dict(phases.names)
        return {
            "model_version": model_id,
            "training_run": run_id,
            "epochs": len(result.history),
            "best_epoch": result.best_epoch,
            "resumed_after": result.resumed_after,
            "stopped_early": result.stopped_early,
            "frozen_tensors": frozen,
            "device": str(torch_device),
            "split": split,
            **summary,
            "checkpoint": checkpoint.key,
            "learning_curve": curve.key,
        }
    finally:
        services.close()


def _train_config(values: dict, phases: PhaseMap) -> TrainConfig:
    """TrainConfig from plain values (the flow's JSON-able parameters); ``exclusive``
    pairs are phase names, e.g. ``[["cbd", "nmc"]]``.
    """
    values = dict(values)
    augmentation = values.pop("augmentation", None)
    pairs = values.pop("exclusive", ())
    for pair in pairs:
        unknown = [name for name in pair if name not in phases.names]
        if unknown or len(pair) != 2:
            raise RegistryError(
                f"exclusive pair {pair}: name two of the phases {', '.join(phases.names)}"
            )
    exclusive = tuple((phases.names.index(a), phases.names.index(b)) for a, b in pairs)
    config = TrainConfig(**values, exclusive=exclusive)
    if augmentation is not None:
        config = replace(config, augmentation=Augmentation(**augmentation))
    return config


@flow(name="evaluate")
def evaluate_model(
    model_id: int,
    dataset_version_id: int,
    split: str = "test",
    device: str = "auto",
    tortuosity_class: int | None = None,
) -> dict:
    """Score a registered model on a split of a dataset version; the numbers are recorded
    as metrics of the model (with the dataset version and split) and returned. With
    ``tortuosity_class`` the class's in-plane tortuosity is compared too.
    """
    services = Services.from_settings()
    try:
        torch_device = resolve_device(device)
        model, spec, _ = load_registered_model(services, model_id, str(torch_device))
        dataset = services.registry.dataset_version(dataset_version_id)
        phases = dataset_phases(services, dataset)
        if phases.names != spec.class_names:
            raise RegistryError(
                f"model {model_id} predicts {spec.class_names}, but dataset "
                f"{dataset.name}@{dataset.version} has phases {phases.names}"
            )
        slices = dataset_slices(services, dataset)[split]
        if not slices:
            raise RegistryError(f"{dataset.name}@{dataset.version} has no {split} slices")
        result = evaluate(
            model, slices, len(phases), spec.tile, spec.tile // 4, torch_device, tortuosity_class
        )
        services.registry.add_metrics(
            model_id, evaluation_metrics(result, phases.names, split, dataset.id)
        )
        return {
            "model_version": model_id,
            "dataset": f"{dataset.name}@{dataset.version}",
            "split": split,
            "slices": len(slices),
            **result.as_dict(phases.names),
        }
    finally:
        services.close()
