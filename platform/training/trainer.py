"""Training semantic segmentation networks: one optimisation step, epochs, early stopping,
checkpoints that survive a crash, learning curves.

A network may define ``training_loss(images, target, weight, loss, progress)`` to train
more than its final logits (E-Net trains every member, MatPhase follows a curriculum);
``progress`` is the fraction of training done, in [0, 1]. Otherwise the loss is taken on
``model(images)``. A network may define ``tune_weights(images, labels)``, called once on
validation patches after training (E-Net's ensemble weights).

Training is seeded: the same data, configuration and seed give the same weights on the
same device, and a run resumed from its checkpoint continues exactly where it stopped.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from tomoloop.errors import TomoloopError
from tomoloop.labels.phases import IGNORE
from tomoloop.networks.losses import LOSSES, TVERSKY_LOSSES, WEIGHTED_LOSSES, Loss, get_loss
from tomoloop.outputs import temp_file_beside
from tomoloop.training.averaging import average_decay, update_average
from tomoloop.training.data import (
    Augmentation,
    LabelledSlice,
    check_slices,
    labelled_slices,
    prepare_training_slices,
    sample_patches,
)
from tomoloop.training.evaluation import evaluate

CHECKPOINT = "last.pt"


class TrainingError(TomoloopError):
    """Training cannot start or continue (bad device, stale checkpoint, NaN loss)."""


@dataclass(frozen=True)
class TrainConfig:
    """What a training run does. ``patience``: epochs without a validation-mIoU gain
    before stopping early (0 = never stop early). ``patches_per_epoch`` random patches of
    ``patch``² pixels make an epoch. ``average``: the decay of an exponential moving average
    of the weights, updated after every step (0 = none; :func:`average_decay`); when set,
    validation scores the averaged weights and the run ends with the best of them.
    """

    epochs: int = 30
    patch: int = 128  # Quenum et al. 2023, §3 (docs/references.md): 128² patches
    batch: int = 8
    patches_per_epoch: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    loss: str = "ce"
    seed: int = 0
    patience: int = 8
    class_balanced: bool = True
    augmentation: Augmentation = field(default_factory=Augmentation)
    overlap: int = 32
    row_removal: int = 0  # Tabassum et al. n.d., App. §II: k = 10 copies
    # "" (none), "balanced" or one weight per class "1,2,0.5" (ce/bce; Tabassum et al. n.d.)
    class_weights: str = ""
    # Tversky / focal Tversky: the weight of the false positives (α = 1 − β on the false
    # negatives), Quenum et al. 2023, eq. 1; 0.3 by the binder measurement in docs/seeds.md
    tversky_beta: float = 0.3
    # class pairs that cannot touch (Tabassum et al. n.d., App. §II)
    exclusive: tuple[tuple[int, int], ...] = ()
    average: float = 0.0

    def __post_init__(self) -> None:
        patch_ok = self.patch >= 16 and self.patch % 16 == 0
        problems = [
            f"{name} {value!r} {rule}"
            for name, value, ok, rule in (
                ("epochs", self.epochs, self.epochs >= 1, "must be ≥ 1"),
                ("batch", self.batch, self.batch >= 1, "must be ≥ 1"),
                (
                    "patch",
                    self.patch,
                    patch_ok,
                    "must be a multiple of 16 from 16 on (16, 32, 64, …)",
                ),
                (
                    "patches_per_epoch",
                    self.patches_per_epoch,
                    self.patches_per_epoch >= 1,
                    "must be ≥ 1",
                ),
                ("lr", self.lr, self.lr >= 0, "must be ≥ 0"),
                ("loss", self.loss, self.loss in LOSSES, f"is not one of {', '.join(LOSSES)}"),
                ("patience", self.patience, self.patience >= 0, "must be ≥ 0"),
                ("average", self.average, 0 <= self.average < 1, "must be ≥ 0 and below 1"),
                (
                    "overlap",
                    self.overlap,
                    not patch_ok or 0 <= self.overlap < self.patch,  # judged on a valid patch
                    "must be ≥ 0 and below the patch",
                ),
                (
                    "row_removal",
                    self.row_removal,
                    self.row_removal >= 0,
                    "must be ≥ 0",
                ),
                (
                    "tversky_beta",
                    self.tversky_beta,
                    0 < self.tversky_beta < 1,
                    "must lie between 0 and 1",
                ),
                (
                    "class_weights",
                    self.class_weights,
                    _weights_spec_ok(self.class_weights),
                    "must be 'balanced' or numbers ≥ 0 separated by commas",
                ),
                (
                    "class_weights",
                    self.class_weights,
                    not self.class_weights or self.loss in WEIGHTED_LOSSES,
                    f"needs --loss {' or '.join(WEIGHTED_LOSSES)} (the weighted cross-entropy)",
                ),
            )
            if not ok
        ]
        if problems:
            raise TrainingError("; ".join(problems))

    def fingerprint(self) -> str:
        """sha256 of the configuration, to refuse resuming a different run's checkpoint."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()


def _weight_values(spec: str) -> np.ndarray | None:
    """Comma-separated class weights "1,2,0.5" → float64 array, None unless each is a
    finite number ≥ 0."""
    try:
        values = np.array([float(v) for v in spec.split(",")])
    except ValueError:
        return None
    return values if bool(np.all(np.isfinite(values) & (values >= 0))) else None


def _weights_spec_ok(spec: str) -> bool:
    """Whether ``spec`` reads as a ``--class-weights`` value ("", "balanced", "1,2,0.5")."""
    return spec in ("", "balanced") or _weight_values(spec) is not None


@dataclass(frozen=True)
class EpochRecord:
    """One epoch: mean training loss and validation scores (full slices, tiled)."""

    epoch: int
    train_loss: float
    val_miou: float
    val_mdsc: float
    val_pixel_accuracy: float
    seconds: float


@dataclass(frozen=True)
class TrainResult:
    """The history of every epoch (resumed ones included), the best epoch (its weights are
    in the model), whether training stopped early, and the epoch it resumed after (0 = new).
    """

    history: list[EpochRecord]
    best_epoch: int
    best_miou: float
    stopped_early: bool
    resumed_after: int


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` → CUDA when present, else CPU; ``cuda``/``cuda:N``/``cpu`` as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise TrainingError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError(f"device {name!r} asked for, but this machine has no CUDA GPU")
    return device


def balanced_class_weights(counts: np.ndarray) -> np.ndarray:
    """Inverse-frequency class weights (n_classes,) float64 from labelled pixel counts
    (n_classes,): total / (classes present · count), so a class's pixels weigh in all
    together as much as any other present class's; 0 for absent classes. Tabassum et al.
    n.d. (App. §II) train with weighted cross-entropy "due to heavy class imbalance" without
    giving the weights; this is the usual choice (scikit-learn's ``class_weight="balanced"``).
    """
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    out = np.zeros_like(counts)
    out[present] = counts.sum() / (present.sum() * counts[present])
    return out


def class_weights(spec: str, slices: Sequence[LabelledSlice], n_classes: int) -> np.ndarray | None:
    """The class weights (n_classes,) float64 a ``--class-weights`` value asks for: None for
    "", :func:`balanced_class_weights` of the slices' labelled pixels for "balanced", or the
    comma-separated numbers, one per class, each ≥ 0.
    """
    if not spec:
        return None
    if spec == "balanced":
        counts = np.zeros(n_classes, dtype=np.int64)
        for s in slices:
            labels = s.labels[s.labels != IGNORE].astype(np.int64)
            counts += np.bincount(labels, minlength=n_classes)[:n_classes]
        return balanced_class_weights(counts)
    values = _weight_values(spec)
    if values is None or values.size != n_classes:
        raise TrainingError(
            f"class weights {spec!r}: give 'balanced' or {n_classes} numbers ≥ 0, one per "
            f"class in phase order, e.g. {','.join(['1'] * n_classes)}"
        )
    return values


def training_loss(config: TrainConfig, weights: np.ndarray | None, device: torch.device) -> Loss:
    """The loss ``config`` asks for, with its settings bound: the class ``weights``
    (n_classes,) for the cross-entropy, ``tversky_beta`` for the Tversky losses."""
    loss = get_loss(config.loss)
    if weights is not None:
        loss = functools.partial(
            loss, class_weights=torch.as_tensor(weights, dtype=torch.float32, device=device)
        )
    if config.loss in TVERSKY_LOSSES:
        loss = functools.partial(loss, beta=config.tversky_beta)
    return loss


def mask_unlabelled(
    target: torch.Tensor, weight: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The one place the ignore index is applied: target (N, H, W) int64 with :data:`IGNORE`
    at unlabelled pixels → (target with class 0 there, per-pixel weight (N, H, W) float32
    that is 0 there and ``weight`` (or 1) elsewhere). A batch with every pixel labelled is
    returned as it is, so dense training computes exactly what it did before sparse labels.
    """
    labelled = target != IGNORE
    if bool(labelled.all()):
        return target, weight
    weight = labelled.to(torch.float32) if weight is None else weight * labelled
    return target.masked_fill(~labelled, 0), weight


def compute_loss(
    model: nn.Module,
    images: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    loss: Loss,
    progress: float = 0.0,
) -> torch.Tensor:
    """Scalar training loss of a batch: images (N, C, H, W) float, target (N, H, W) int64,
    weight (N, H, W) float or None. Unlabelled pixels (target :data:`IGNORE`) weigh 0 in
    every loss and network (:func:`mask_unlabelled`).
    """
    target, weight = mask_unlabelled(target, weight)
    custom = getattr(model, "training_loss", None)
    if custom is not None:
        return custom(images, target, weight, loss, progress)
    return loss(model(images), target, weight)


def _input_channels(model: nn.Module) -> int | None:
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)), None)
    if isinstance(first, nn.Conv2d):
        return first.in_channels
    return None


def _atomic_save(state: dict, path: Path) -> None:
    name = temp_file_beside(path)
    try:
        torch.save(state, name)
        os.replace(name, path)
    except BaseException:
        name.unlink(missing_ok=True)
        raise


def _load_checkpoint(path: Path, fingerprint: str) -> dict | None:
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("fingerprint") != fingerprint:
        raise TrainingError(
            f"{path} belongs to a run with another configuration: "
            "delete it or train into another checkpoint folder"
        )
    return state


def _clone_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def train(
    model: nn.Module,
    train_slices: Sequence[LabelledSlice],
    val_slices: Sequence[LabelledSlice],
    n_classes: int,
    config: TrainConfig,
    checkpoint_dir: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place; at the end it holds the weights of the best validation epoch
    (with ``config.average``, the best of the averaged weights).

    After every epoch the full state (weights, optimiser, AMP scaler, random generators,
    history, best weights) is written atomically to ``checkpoint_dir/last.pt``; calling
    again with the same folder and configuration resumes after the last finished epoch.
    Uses CUDA autocast and a gradient scaler when ``device`` is a GPU.
    """
    check_slices(train_slices, n_classes, "train")
    check_slices(val_slices, n_classes, "val")
    train_slices = prepare_training_slices(
        labelled_slices(train_slices), config.row_removal, config.exclusive
    )
    val_slices = labelled_slices(val_slices)
    weights = class_weights(config.class_weights, train_slices, n_classes)
    channels = _input_channels(model)
    if channels not in (None, 1):
        raise TrainingError(f"the network takes {channels} input channels; slices have 1")
    device = torch.device(device)
    loss_fn = training_loss(config, weights, device)
    folder = Path(checkpoint_dir)
    folder.mkdir(parents=True, exist_ok=True)
    fingerprint = config.fingerprint()
    amp = device.type == "cuda"

    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    cuda_rng = device.type == "cuda"
    model.to(device)
    optimiser = torch.optim.AdamW(
        (p for p in model.parameters() if p.requires_grad),
        lr=config.lr,
        weight_decay=config.weight_decay,
    )
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    history: list[EpochRecord] = []
    best_state, best_miou, best_epoch = _clone_state(model), -math.inf, 0
    average = copy.deepcopy(model).requires_grad_(False) if config.average else None
    scored = model if average is None else average  # the weights validation judges

    saved = _load_checkpoint(folder / CHECKPOINT, fingerprint)
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimiser.load_state_dict(saved["optimiser"])
        if average is not None:
            average.load_state_dict(saved["average"])
        scaler.load_state_dict(saved["scaler"])
        rng.bit_generator.state = saved["numpy_rng"]
        torch.set_rng_state(saved["torch_rng"])
        if cuda_rng and saved["cuda_rng"]:
            torch.cuda.set_rng_state_all(saved["cuda_rng"])
        history = [EpochRecord(**r) for r in saved["history"]]
        best_state, best_miou, best_epoch = saved["best"], saved["best_miou"], saved["best_epoch"]
    resumed_after = len(history)

    steps = max(1, config.patches_per_epoch // config.batch)
    stopped_early = False
    for epoch in range(resumed_after + 1, config.epochs + 1):
        if config.patience and epoch - best_epoch > config.patience:
            stopped_early = True
            break
        start = time.perf_counter()
        model.train()
        losses = []
        for step in range(steps):
            images, target, weight = sample_patches(
                train_slices,
                config.batch,
                config.patch,
                rng,
                n_classes,
                config.class_balanced,
                config.augmentation,
            )
            images, target, weight = (t.to(device) for t in (images, target, weight))
            step_index = (epoch - 1) * steps + step
            progress = step_index / (config.epochs * steps)
            optimiser.zero_grad(set_to_none=True)
            with torch.autocast(device.type, enabled=amp):
                loss = compute_loss(model, images, target, weight, loss_fn, progress)
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"the loss became {loss.item()} at epoch {epoch}: lower --lr, "
                    "or check the images for extreme values"
                )
            scaler.scale(loss).backward()
            scaler.step(optimiser)
            scaler.update()
            if average is not None:
                update_average(average, model, average_decay(config.average, step_index))
            losses.append(loss.item())
        result = evaluate(scored, val_slices, n_classes, config.patch, config.overlap, device)
        record = EpochRecord(
            epoch=epoch,
            train_loss=float(np.mean(losses)),
            val_miou=result.scores.miou,
            val_mdsc=result.scores.mdsc,
            val_pixel_accuracy=result.scores.pixel_accuracy,
            seconds=time.perf_counter() - start,
        )
        history.append(record)
        if record.val_miou > best_miou:
            best_state, best_miou, best_epoch = _clone_state(scored), record.val_miou, epoch
        _atomic_save(
            {
                "fingerprint": fingerprint,
                "model": model.state_dict(),
                "optimiser": optimiser.state_dict(),
                "average": {} if average is None else average.state_dict(),
                "scaler": scaler.state_dict(),
                "numpy_rng": rng.bit_generator.state,
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if cuda_rng else [],
                "history": [asdict(r) for r in history],
                "best": best_state,
                "best_miou": best_miou,
                "best_epoch": best_epoch,
            },
            folder / CHECKPOINT,
        )
        if on_epoch is not None:
            on_epoch(record)

    model.load_state_dict(best_state)
    tune = getattr(model, "tune_weights", None)
    if tune is not None:
        images, labels, _ = sample_patches(
            val_slices, 32, config.patch, np.random.default_rng(config.seed), n_classes
        )
        tune(images.to(device), labels.to(device))
    return TrainResult(history, best_epoch, best_miou, stopped_early, resumed_after)


def plot_learning_curve(history: Sequence[EpochRecord], path: str | os.PathLike[str]) -> Path:
    """Training loss and validation mIoU/mDSC per epoch as a PNG; the path written."""
    epochs = [r.epoch for r in history]
    fig = Figure(figsize=(9, 3.4), dpi=110)
    left, right = fig.subplots(1, 2)
    left.plot(epochs, [r.train_loss for r in history], marker="o", ms=3)
    left.set(xlabel="epoch", ylabel="training loss", title="loss")
    right.plot(epochs, [r.val_miou for r in history], marker="o", ms=3, label="mIoU")
    right.plot(epochs, [r.val_mdsc for r in history], marker="s", ms=3, label="mDSC")
    right.set(xlabel="epoch", ylabel="validation score", ylim=(0, 1), title="validation")
    right.legend(loc="lower right")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    return out
