"""Training and judging semantic networks on a dataset version: the request, the network to
start from, training inside the run lifecycle, evaluation on the test split, and the
numbers recorded as metrics.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import nn

from tomoloop.db.entities import DatasetVersion, Volume
from tomoloop.db.registry import VOLUME_METRIC, NewMetric, RegistryError
from tomoloop.inference.predict import default_overlap
from tomoloop.labels.phases import PhaseMap
from tomoloop.networks.registry import ModelSpec, freeze, save_model, transfer_weights
from tomoloop.outputs import writing
from tomoloop.scratch import scratch_dir
from tomoloop.services.context import Log, Services
from tomoloop.services.datasets import dataset_phases, dataset_slices, slice_volumes
from tomoloop.services.models import load_registered_model
from tomoloop.services.runs import Run, RunFolder, finish_run, run_folder
from tomoloop.training.data import (
    Augmentation,
    DatasetError,
    LabelledSlice,
    check_slices,
    labelled_slices,
    parse_tier_weights,
)
from tomoloop.training.evaluation import Evaluation, evaluate_groups
from tomoloop.training.trainer import (
    EpochRecord,
    TrainConfig,
    class_weights,
    plot_learning_curve,
    train,
)


@dataclass(frozen=True)
class SemanticPlan:
    """What a semantic training request trains on, with what, and where it checkpoints."""

    dataset: DatasetVersion
    phases: PhaseMap
    config: TrainConfig
    request: dict[str, Any]
    folder: RunFolder


@dataclass(frozen=True)
class Network:
    """A network ready to train: built (or fine-tuned from a parent), some tensors frozen."""

    model: nn.Module
    spec: ModelSpec
    frozen: int


@dataclass(frozen=True)
class TrainedSemantic:
    """A finished semantic training run and its scores on ``split`` (test, else val)."""

    model_version: int
    training_run: int
    epochs: int
    best_epoch: int
    resumed_after: int
    stopped_early: bool
    frozen_tensors: int
    device: str
    split: str
    scores: dict[str, Any]
    checkpoint: str
    learning_curve: str

    def to_dict(self) -> dict[str, Any]:
        head = asdict(self)
        scores = head.pop("scores")
        tail = {key: head.pop(key) for key in ("checkpoint", "learning_curve")}
        return {**head, **scores, **tail}


@dataclass(frozen=True)
class ModelEvaluation:
    """A registered model's scores (:meth:`Evaluation.as_dict`) on a dataset split."""

    model_version: int
    dataset: str
    split: str
    slices: int
    scores: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        head = asdict(self)
        scores = head.pop("scores")
        return {**head, **scores}


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
    result: Evaluation,
    class_names: tuple[str, ...],
    split: str,
    dataset_version_id: int,
    volume_id: int | None = None,
) -> list[NewMetric]:
    """Evaluation scores as metrics: overall, then per class (IoU, Dice, volume fraction),
    and the measured class's in-plane tortuosity (predicted and gold) when finite. With
    ``volume_id`` the scores are of that volume's slices alone: each name is prefixed
    ``volume:<volume id>/`` (:func:`volume_metric_name`).
    """
    overall = result.as_dict(class_names)
    per_class = overall.pop("per_class")
    tortuosity = overall.pop("tortuosity", None)

    def metric(name: str, value: float, class_name: str = "") -> NewMetric:
        return NewMetric(
            volume_metric_name(name, volume_id), value, split, class_name=class_name,
            dataset_version_id=dataset_version_id,
        )  # fmt: skip

    metrics = [
        metric(name, value)
        for name, value in overall.items()
        if not isinstance(value, bool)  # a note on the numbers, not a number
    ]
    for name, values in per_class.items():
        metrics.extend(metric(key, value, name) for key, value in values.items())
    if tortuosity is not None:
        metrics.extend(
            metric(key, tortuosity[part], tortuosity["class"])
            for key, part in (("tortuosity_x", "predicted"), ("tortuosity_x_truth", "truth"))
            if math.isfinite(tortuosity[part])
        )
    return metrics


def volume_metric_name(name: str, volume_id: int | None) -> str:
    """A metric's registry name: ``name`` pooled over a split (``volume_id`` None), or
    ``volume:<volume id>/<name>`` for one volume's slices of it."""
    return name if volume_id is None else f"{VOLUME_METRIC}{volume_id}/{name}"


@dataclass(frozen=True)
class SplitScores:
    """A model judged on a split of a dataset version: over all its labelled slices
    (``pooled``) and per volume the version holds (``volumes``: by volume; None where
    nobody labelled that volume's slices of the split yet)."""

    split: str
    slices: int
    pooled: Evaluation
    volumes: dict[Volume, Evaluation | None]

    def metrics(self, class_names: tuple[str, ...], dataset_version_id: int) -> list[NewMetric]:
        """The pooled scores as metrics; with more than one volume, also each scored
        volume's (:func:`evaluation_metrics` with its id)."""
        out = evaluation_metrics(self.pooled, class_names, self.split, dataset_version_id)
        if len(self.volumes) > 1:
            for volume, result in self.volumes.items():
                if result is not None:
                    out += evaluation_metrics(
                        result, class_names, self.split, dataset_version_id, volume.id
                    )
        return out

    def as_dict(self, class_names: tuple[str, ...]) -> dict[str, Any]:
        """:meth:`Evaluation.as_dict` of the pooled scores with ``volumes``: per volume
        name its scores and labelled pixels, or ``scored: false`` and why."""
        volumes: dict[str, Any] = {}
        for volume, result in self.volumes.items():
            if result is None:
                volumes[volume.name] = {
                    "scored": False,
                    "labelled_px": 0,
                    "reason": f"nobody labelled its {self.split} slices yet",
                }
            else:
                labelled = int(result.confusion.sum())
                volumes[volume.name] = {
                    "scored": True, "labelled_px": labelled, **result.as_dict(class_names)
                }  # fmt: skip
        return {**self.pooled.as_dict(class_names), "volumes": volumes}


def unlabelled_split(services: Services, dataset: DatasetVersion, split: str) -> DatasetError:
    """The error of a split of ``dataset`` without a labelled pixel, saying how to label
    it — or, when the split holds no slice at all (e.g. ingested with ``--split 1,0,0``),
    that no label can fill it."""
    where = f"{dataset.name}@{dataset.version}"
    if not services.registry.pool(dataset.id, split):
        return DatasetError(
            f"{where} has no {split} slices at all (its --split gave it none): training "
            f"needs train and val slices and models are judged on test; ingest the scan "
            f"as a new dataset (another --name) with a --split that has them, e.g. 0.8,0.1,0.1"
        )
    return DatasetError(
        f"{where} has no labelled pixel in its {split} split: "
        f"label its {split} slices first (`tomoloop gold LABELS --dataset {dataset.name} "
        f"--volume VOLUME --splits {split}`, or a round)"
    )


def score_split(
    services: Services,
    dataset: DatasetVersion,
    model: nn.Module,
    spec: ModelSpec,
    slices: list[LabelledSlice],
    split: str,
    device: torch.device,
    tortuosity_class: int | None = None,
) -> SplitScores:
    """``model`` judged on the labelled ``slices`` of ``split`` of ``dataset``, pooled and
    per volume (every slice predicted once).

    Raises:
        DatasetError: no pixel of the split is labelled (nothing to score).
    """
    labelled = labelled_slices(slices)
    if not labelled:
        raise unlabelled_split(services, dataset, split)
    owner = slice_volumes(services, dataset)
    held = services.registry.dataset_volumes(dataset.id)
    pooled, by_name = evaluate_groups(
        model, labelled, [owner[s.annotation_id] for s in labelled], len(spec.class_names),
        spec.tile, default_overlap(spec.tile), device, tortuosity_class,
    )  # fmt: skip
    return SplitScores(split, len(labelled), pooled, {v: by_name.get(v.name) for v in held})


def train_config(values: dict[str, Any], phases: PhaseMap) -> TrainConfig:
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
    class_weights(config.class_weights, [], len(phases))  # one weight per phase
    if augmentation is not None:
        config = replace(config, augmentation=Augmentation(**augmentation))
    return config


def plan_semantic(
    services: Services,
    dataset_version_id: int,
    arch: str,
    config: dict[str, Any] | None,
    options: dict[str, Any] | None,
    parent: int | None,
    freeze_prefixes: tuple[str, ...],
    tier_weights: str,
) -> SemanticPlan:
    """The request (every option checked) and its run folder."""
    dataset = services.registry.dataset_version(dataset_version_id)
    phases = dataset_phases(services, dataset)
    config_ = train_config(config or {}, phases)
    request = {
        "dataset_version": dataset.id,
        "arch": arch,
        "options": options or {},
        "train": asdict(config_),
        "parent": parent,
        "freeze": list(freeze_prefixes),
        "tier_weights": tier_weights,
    }
    return SemanticPlan(dataset, phases, config_, request, run_folder(services, request))


def training_slices(services: Services, plan: SemanticPlan) -> dict[str, list[LabelledSlice]]:
    """The plan's labelled slices by split, train and val checked before anything is
    registered."""
    weights = parse_tier_weights(plan.request["tier_weights"])
    slices = dataset_slices(services, plan.dataset, weights)
    for split in ("train", "val"):
        if not labelled_slices(slices[split]):
            raise unlabelled_split(services, plan.dataset, split)
    check_slices(slices["train"], len(plan.phases), "train")
    check_slices(slices["val"], len(plan.phases), "val")
    return slices


def initial_network(services: Services, plan: SemanticPlan, log: Log) -> Network:
    """The plan's network, seeded (``--seed`` fixes the initial weights too), with the
    parent's weights where they fit and the ``freeze`` prefixes frozen."""
    request = plan.request
    torch.manual_seed(plan.config.seed)
    spec = ModelSpec(
        request["arch"], 1, len(plan.phases), request["options"], plan.phases.names,
        plan.config.patch,
    )  # fmt: skip
    model = spec.build()
    if request["parent"] is not None:
        parent_model, _, _ = load_registered_model(services, request["parent"])
        fresh = transfer_weights(model, parent_model.state_dict())
        log.info("fine-tuning from model %s; %d tensors start fresh", request["parent"], len(fresh))
    return Network(model, spec, freeze(model, tuple(request["freeze"])))


def fit_semantic(
    services: Services,
    plan: SemanticPlan,
    network: Network,
    slices: dict[str, list[LabelledSlice]],
    run: Run,
    device: torch.device,
    log: Log,
) -> TrainedSemantic:
    """Train in the run folder (resuming from its last epoch), evaluate on the test split
    (val without one), store checkpoint and learning curve, and finish the run."""
    model, spec, classes = network.model, network.spec, len(plan.phases)
    with writing("the run folder", plan.folder.path):
        result = train(
            model, slices["train"], slices["val"], classes, plan.config, plan.folder.path, device,
            on_epoch=lambda r: log.info(
                "epoch %d: loss %.4f, val mIoU %.4f", r.epoch, r.train_loss, r.val_miou
            ),
        )  # fmt: skip
    split = "test" if labelled_slices(slices["test"]) else "val"
    scored = score_split(services, plan.dataset, model, spec, slices[split], split, device)
    checkpoint = services.store.put_bytes(save_model(model, spec), ".pt")
    with scratch_dir(services.settings.home, "tomoloop-train") as tmp:
        curve = services.store.put_file(plot_learning_curve(result.history, tmp / "c.png"))
    metrics = curve_metrics(result.history, plan.dataset.id) + scored.metrics(
        plan.phases.names, plan.dataset.id
    )
    finish_run(services, run, metrics, len(result.history), curve.key, checkpoint)
    return TrainedSemantic(
        run.model_id, run.run_id, len(result.history), result.best_epoch, result.resumed_after,
        result.stopped_early, network.frozen, str(device), split,
        scored.as_dict(plan.phases.names), checkpoint.key, curve.key,
    )  # fmt: skip


def evaluate_registered(
    services: Services,
    model_id: int,
    dataset_version_id: int,
    split: str,
    device: torch.device,
    tortuosity_class: int | None = None,
) -> ModelEvaluation:
    """Score registered model ``model_id`` on a split of a dataset version and record the
    numbers as its metrics (with the dataset version and split)."""
    model, spec, _ = load_registered_model(services, model_id, str(device))
    dataset = services.registry.dataset_version(dataset_version_id)
    phases = dataset_phases(services, dataset)
    if phases.names != spec.class_names:
        raise RegistryError(
            f"model {model_id} predicts {spec.class_names}, but dataset "
            f"{dataset.name}@{dataset.version} has phases {phases.names}"
        )
    slices = dataset_slices(services, dataset)[split]
    scored = score_split(services, dataset, model, spec, slices, split, device, tortuosity_class)
    services.registry.add_metrics(model_id, scored.metrics(phases.names, dataset.id))
    return ModelEvaluation(
        model_id, f"{dataset.name}@{dataset.version}", split, scored.slices,
        scored.as_dict(phases.names),
    )  # fmt: skip
