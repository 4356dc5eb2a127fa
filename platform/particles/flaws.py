"""Flawed-particle classification and 3-phase flaw segmentation (Daemi et al. 2022, §4
"Classifier Training and Validation" and "Flaw Segmentation"; docs/references.md).

A particle's grey slices, masked by the particle, CLAHE-equalised and resized to 128 × 128,
are scored by a VGG16-style binary CNN (pairs of 3 × 3 convolutions with ReLU, 2 × 2 max
pooling, 10 % dropout, a dense sigmoid output). A particle is flawed when the mean score
of 10 slices within the central 80 % of its height is ≥ 0.4. Inside a particle, an OpenCV
triangle threshold separates flaw (dark) from solid.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from scipy import ndimage
from torch import nn

from tomoloop.checkpoints import read_checkpoint
from tomoloop.errors import TomoloopError

INPUT_SIDE = 128  # Daemi et al. 2022, §4: slices resized to 128 × 128
SLICES_PER_PARTICLE = 10  # Daemi et al. 2022, §2.3: ten slices …
HEIGHT_SPAN = 0.8  # … within 80 % of its height
FLAW_THRESHOLD = 0.4  # Daemi et al. 2022, §4: flawed when mean score ≥ 0.4


class FlawError(TomoloopError):
    """Flaw classification cannot run as asked."""


class FlawNet(nn.Module):
    """VGG16-style binary classifier of (B, 1, 128, 128) slices → (B,) logits.

    ``widths``: filters of each block of two 3 × 3 conv + ReLU layers, each block followed
    by 2 × 2 max pooling (VGG16 uses 64 … 512; the default is narrower for CPU);
    ``batch_norm`` after each convolution (VGG16-BN) lets it train from scratch on a few
    hundred slices. ``dense`` 0: global max pooling then the output (a flaw anywhere on the
    slice counts); ``dense`` > 0: the published head (Daemi et al. 2022, §4) — the feature
    map flattened into a dense layer of ``dense`` units (ReLU), then the output. Dropout
    ``dropout`` before the output.
    """

    def __init__(
        self,
        widths: Sequence[int] = (16, 32, 64, 128),
        dropout: float = 0.1,
        dense: int = 0,
        batch_norm: bool = True,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 1
        for width in widths:
            for into in (channels, width):
                layers.append(nn.Conv2d(into, width, 3, padding=1))
                if batch_norm:
                    layers.append(nn.BatchNorm2d(width))
                layers.append(nn.ReLU(inplace=True))
            layers.append(nn.MaxPool2d(2, 2))
            channels = width
        self.features = nn.Sequential(*layers)
        side = INPUT_SIDE >> len(widths)
        pooled: list[nn.Module] = (
            [nn.Flatten(), nn.Linear(channels * side * side, dense), nn.ReLU(inplace=True)]
            if dense
            else [nn.AdaptiveMaxPool2d(1), nn.Flatten()]
        )
        self.head = nn.Sequential(
            *pooled,
            nn.Dropout(dropout),  # Daemi et al. 2022, §4: 10 % dropout
            nn.Linear(dense or channels, 1),
        )
        self.widths = tuple(widths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).squeeze(1)


def classifier_input(grey: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """One (H, W) grey slice of a particle and its bool mask → (128, 128) float32 in
    [0, 1]: masked (outside 0), cropped to the mask's box, resized, CLAHE-equalised.
    """
    if not mask.any():
        raise FlawError("the particle mask is empty on this slice")
    ys, xs = np.nonzero(mask)
    box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    grey8 = grey[box] if grey.dtype == np.uint8 else np.clip(grey[box], 0, 255).astype(np.uint8)
    masked = np.where(mask[box], grey8, 0).astype(np.uint8)
    resized = cv2.resize(masked, (INPUT_SIDE, INPUT_SIDE), interpolation=cv2.INTER_LINEAR)
    # CLAHE after resizing: its 8 × 8 tiles then span 16 px, not a few noisy pixels
    equalised = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(resized)
    return equalised.astype(np.float32) / 255.0


def slice_indices(
    z0: int, z1: int, n: int = SLICES_PER_PARTICLE, span: float = HEIGHT_SPAN
) -> list[int]:
    """Up to ``n`` distinct z indices spread evenly over the central ``span`` of [z0, z1)."""
    height = z1 - z0
    margin = (1.0 - span) * height / 2.0
    positions = np.linspace(z0 + margin, z1 - 1 - margin, n).round().astype(int)
    return sorted({int(p) for p in positions if z0 <= p < z1})


def particle_inputs(
    grey: np.ndarray, labels: np.ndarray, pid: int, box: tuple[int, int]
) -> np.ndarray:
    """(k, 128, 128) classifier inputs of particle ``pid`` of (Z, Y, X) ``labels`` over
    ``grey`` (uint8), from the slices :func:`slice_indices` picks in its z range ``box``.
    """
    chosen = [z for z in slice_indices(*box) if (labels[z] == pid).any()]
    return np.stack([classifier_input(grey[z], labels[z] == pid) for z in chosen])


def labelled_inputs(
    grey: np.ndarray, labels: np.ndarray, flawed: Sequence[bool]
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Classifier examples of particles ``1..len(flawed)`` of (Z, Y, X) ``labels`` over the
    uint8 ``grey`` volume, particle ``i + 1`` flawed when ``flawed[i]``: inputs (k, 128,
    128), their 0/1 labels (k,), and how many slices each particle gave (in id order)."""
    images, targets, counts = [], [], []
    for pid, flaw in enumerate(flawed, start=1):
        zs = np.nonzero((labels == pid).any(axis=(1, 2)))[0]
        inputs = particle_inputs(grey, labels, pid, (int(zs.min()), int(zs.max()) + 1))
        images.append(inputs)
        targets += [int(flaw)] * len(inputs)
        counts.append(len(inputs))
    return np.concatenate(images), np.array(targets), counts


def particle_scores(
    net: FlawNet,
    grey: np.ndarray,
    labels: np.ndarray,
    boxes: dict[int, tuple[int, int]],
    device: torch.device,
) -> dict[int, np.ndarray]:
    """Slice flaw scores (k,) of each particle id in ``boxes`` (id → its z range
    [z0, z1)) of (Z, Y, X) ``labels`` over the uint8 ``grey`` volume.
    """
    return {
        pid: slice_scores(net, particle_inputs(grey, labels, pid, box), device)
        for pid, box in boxes.items()
    }


def flaw_volume(grey: np.ndarray, labels: np.ndarray, flawed: set[int]) -> np.ndarray:
    """(Z, Y, X) uint8 3-phase volume: 0 outside particles, 2 solid, and 1 flaw inside
    the ``flawed`` particles (:func:`three_phase` on each of their z slices).
    """
    out = np.where(labels > 0, 2, 0).astype(np.uint8)
    boxes = ndimage.find_objects(labels)  # one pass, not one scan of the volume per particle
    for pid in flawed:
        for z in range(boxes[pid - 1][0].start, boxes[pid - 1][0].stop):
            mask = labels[z] == pid
            phases = three_phase(grey[z], mask)
            out[z][mask] = phases[mask]
    return out


def is_flawed(scores: np.ndarray, threshold: float = FLAW_THRESHOLD) -> bool:
    """Daemi et al. 2022's rule (§4, Flaw Segmentation): the particle is flawed when its slices'
    mean score is ≥ threshold."""
    if not len(scores):
        raise FlawError("no slice scores: a particle needs at least one scored slice")
    return float(np.mean(scores)) >= threshold


@torch.inference_mode()
def slice_scores(net: FlawNet, inputs: np.ndarray, device: torch.device) -> np.ndarray:
    """(k,) flaw probabilities of (k, 128, 128) classifier inputs."""
    net.eval()
    batch = torch.from_numpy(inputs[:, None]).to(device)
    return torch.sigmoid(net(batch)).float().cpu().numpy()


def three_phase(grey: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(H, W) uint8 3-phase map of one particle slice: 0 outside the particle, 1 flaw
    (darker than the OpenCV triangle threshold of the grey values inside the mask),
    2 solid (Daemi et al. 2022, §2.5 and §4, Flaw Segmentation).
    """
    out = np.zeros(mask.shape, np.uint8)
    if not mask.any():
        return out
    inside = grey[mask].astype(np.uint8).reshape(-1, 1)
    level, _ = cv2.threshold(inside, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_TRIANGLE)
    out[mask] = np.where(grey[mask] > level, 2, 1)
    return out


@dataclass(frozen=True)
class FlawTrainConfig:
    """epochs: most epochs; patience: epochs without a validation-accuracy gain before
    stopping (Daemi et al. 2022, §4: 15); lr: Adam learning rate; batch: slices per step.
    """

    epochs: int = 60
    patience: int = 15
    lr: float = 1e-3
    batch: int = 16
    widths: tuple[int, ...] = (16, 32, 64, 128)
    dense: int = 0
    batch_norm: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.epochs, self.patience, self.batch) < 1 or self.lr <= 0:
            raise FlawError("epochs, patience and batch must be ≥ 1 and lr > 0")
        if not self.widths or INPUT_SIDE >> len(self.widths) < 1 or self.dense < 0:
            raise FlawError(
                f"widths {self.widths}: 1 to {INPUT_SIDE.bit_length() - 1} blocks; dense ≥ 0"
            )

    def build(self) -> FlawNet:
        """The network this configuration trains."""
        return FlawNet(self.widths, dense=self.dense, batch_norm=self.batch_norm)


# Daemi et al. 2022, §4: a VGG16 classifier (two 3 × 3 conv + ReLU per filter count, max
# pooling, 10 % dropout, a dense layer, a sigmoid output); tomoloop's default is narrower,
# batch-normalised and max-pooled globally (FlawNet).
SEED_FLAWS = {"widths": (64, 128, 256, 512, 512), "dense": 256, "batch_norm": False}


@dataclass(frozen=True)
class FlawTrainResult:
    net: FlawNet
    val_accuracy: float
    epochs: int
    history: list[tuple[float, float]]  # (train loss, val accuracy) per epoch


def read_examples(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Classifier inputs (n, 128, 128) and labels (n,) (1 flawed) from PNG slices of
    masked particles under ``folder/flawed`` and ``folder/unflawed`` (the particle is the
    non-zero pixels).
    """
    images, labels = [], []
    for label, sub in ((1, "flawed"), (0, "unflawed")):
        files = sorted((folder / sub).glob("*.png"))
        if not files:
            raise FlawError(
                f"no PNG slices in {folder / sub}: put masked particle slices in "
                f"{folder}/flawed/ and {folder}/unflawed/"
            )
        for file in files:
            grey = cv2.imread(str(file), cv2.IMREAD_GRAYSCALE)
            if grey is None:
                raise FlawError(f"{file} is not a readable PNG image")
            if not grey.any():
                raise FlawError(f"{file} is black: no particle pixels to classify")
            images.append(classifier_input(grey, grey > 0))
            labels.append(label)
    return np.stack(images), np.array(labels)


def split_examples(
    images: np.ndarray, labels: np.ndarray, val_fraction: float, seed: int
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """A seeded, class-stratified train/validation split of (n, …) examples."""
    rng = np.random.default_rng(seed)
    val = np.zeros(len(labels), bool)
    for label in (0, 1):
        members = rng.permutation(np.flatnonzero(labels == label))
        val[members[: max(1, round(val_fraction * len(members)))]] = True
    return (images[~val], labels[~val]), (images[val], labels[val])


def _augment(batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random right-angle rotation and flips of each (128, 128) slice (Daemi et al. 2022, §4)."""
    out = np.empty_like(batch)
    for i, image in enumerate(batch):
        image = np.rot90(image, int(rng.integers(4)))
        out[i] = image[:, ::-1] if rng.random() < 0.5 else image
    return out


def train_classifier(
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    config: FlawTrainConfig,
    device: torch.device,
    on_epoch: Callable[[int, float, float], None] | None = None,
) -> FlawTrainResult:
    """Train a :class:`FlawNet` on (n, 128, 128) inputs with (n,) 0/1 labels (1 flawed);
    keeps the weights of the best validation accuracy, stops after ``patience`` epochs
    without a gain.
    """
    images, labels = train
    if len(np.unique(labels)) < 2 or not len(val[0]):
        raise FlawError(
            "the flaw classifier needs flawed and unflawed training slices and validation slices"
        )
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    net = config.build().to(device)
    optimiser = torch.optim.Adam(net.parameters(), lr=config.lr)
    loss_fn = nn.BCEWithLogitsLoss()
    best, best_state, since, history = -1.0, None, 0, []
    for epoch in range(config.epochs):
        net.train()
        order = rng.permutation(len(images))
        total = 0.0
        for start in range(0, len(order), config.batch):
            pick = order[start : start + config.batch]
            x = torch.from_numpy(_augment(images[pick], rng)[:, None]).to(device)
            y = torch.from_numpy(labels[pick].astype(np.float32)).to(device)
            loss = loss_fn(net(x), y)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(pick)
        accuracy = float(((slice_scores(net, val[0], device) >= 0.5) == (val[1] == 1)).mean())
        history.append((total / len(images), accuracy))
        if on_epoch is not None:
            on_epoch(epoch, *history[-1])
        if accuracy > best:
            best, since = accuracy, 0
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        else:
            since += 1
            if since >= config.patience:
                break
    assert best_state is not None, "an accuracy ≥ 0 beats the initial -1 in the first epoch"
    net.load_state_dict(best_state)
    return FlawTrainResult(net, best, len(history), history)


def save_classifier(net: FlawNet, config: FlawTrainConfig) -> bytes:
    buffer = io.BytesIO()
    state = {k: v.cpu() for k, v in net.state_dict().items()}
    torch.save({"kind": "flawnet", "config": asdict(config), "state": state}, buffer)
    return buffer.getvalue()


def load_classifier(data: bytes, device: torch.device) -> FlawNet:
    saved = read_checkpoint(data, "the flaw classifier's checkpoint")
    if saved.get("kind") != "flawnet":
        raise FlawError("not a tomoloop flaw classifier: train one with tomoloop flaws train")
    config = saved["config"]
    net = FlawTrainConfig(**{**config, "widths": tuple(config["widths"])}).build()
    net.load_state_dict(saved["state"])
    return net.to(device).eval()
