"""MatPhase (Tabassum et al. n.d.; docs/references.md): a semantic model (UGSM) plus the local
classifier LCGAR (App. Table I), trained by a hierarchical curriculum (easy pixels first); and the
appendix's data preparation (App. §II, Pre-processing): row-removal augmentation and kNN label
smoothing by domain rules.

LCGAR classifies a pixel from its local patch and the UGSM logits there (Table I):
conv 3×3 (32) ×2 → max pool 2 → conv 3×3 (16) ×2 → max pool 2 → conv 1×1 (8) ×2 →
flatten ⊕ UGSM logits → FC 128 + dropout 20 % → batch norm → FC n_classes, LeakyReLU, input
in [−1, 1]. Here it runs densely: one fully convolutional pass (stride-1 pooling, dilation
doubling after each pooling) gives every pixel's pooled grid, its cells stacked as channels
are the flatten, and the layers after it run on one row per pixel (BatchNorm1d over the
pixels is BatchNorm2d over the map).
"""

from __future__ import annotations

import math
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tomoloop.labels.phases import IGNORE
from tomoloop.networks.layers import SIDE_MULTIPLE, check_sides
from tomoloop.networks.losses import Loss
from tomoloop.networks.unet import UNet

_SLOPE = 0.01  # LeakyReLU slope (Tabassum et al. n.d., App. §II: no value)
SCHEDULES = ("joint", "two_stage")  # MatPhase training schedules (see MatPhase)
PADDINGS = ("neighbours", "zero")  # what LCGAR's 3×3 convolutions read past the window
WINDOW_CHUNK = 8192  # windows through the zero-padded LCGAR trunk at a time


class LCGAR(nn.Module):
    """LCGAR (Tabassum et al. n.d., App. Table I) at every pixel of an image or on given patches.

    Table I pads its 3×3 convolutions with zeros inside a ``patch``² window
    (``padding="zero"``, each pixel's window run through the layers on its own). By default
    (``padding="neighbours"``) the window's neighbouring pixels take the place of those
    zeros, so a pixel's decision reads a (patch + 12)² window: the ``patch``² window whose
    pooled grid is flattened, plus the 6-pixel ring its four 3×3 convolutions reach; the
    dense pass is then a few convolutions over the whole image. Either way :meth:`forward`
    equals :meth:`classify_patches` on the cut-out windows. The pixel sits at row and
    column ``patch // 2`` of its ``patch``² window.

    The layers after the flatten (FC 128, dropout, batch norm, FC n_classes) are one
    :attr:`head` on rows of features, one row per pixel: the pixels are the batch, as in
    Tabassum et al. n.d. (App. §II), who train LCGAR on batches of 1024 pixels.
    """

    def __init__(
        self,
        in_channels: int = 1,
        n_classes: int = 2,
        patch: int = 8,
        dropout: float = 0.2,
        padding: str = "neighbours",
    ) -> None:
        super().__init__()
        if patch < 4 or patch % 4:
            raise ValueError(f"LCGAR patch side {patch} must be a positive multiple of 4")
        if padding not in PADDINGS:
            raise ValueError(f"LCGAR padding {padding!r}: choose one of {', '.join(PADDINGS)}")
        self.patch = patch
        self.padding = padding
        self.grid = patch // 4  # side of the pooled grid that is flattened
        self.conv1 = nn.ModuleList([nn.Conv2d(in_channels, 32, 3), nn.Conv2d(32, 32, 3)])
        self.conv2 = nn.ModuleList([nn.Conv2d(32, 16, 3), nn.Conv2d(16, 16, 3)])
        self.conv3 = nn.ModuleList([nn.Conv2d(16, 8, 1), nn.Conv2d(8, 8, 1)])
        self.head = nn.Sequential(
            nn.Linear(8 * self.grid**2 + n_classes, 128),
            nn.LeakyReLU(_SLOPE),
            nn.Dropout(dropout),
            nn.BatchNorm1d(128),
            nn.Linear(128, n_classes),
        )

    @property
    def context(self) -> int:
        """Pixels the 3×3 convolutions reach around the window: 1 + 1 + 2 · (1 + 1), or 0
        where they read zeros there."""
        return 6 if self.padding == "neighbours" else 0

    @property
    def window(self) -> int:
        """Side of the input a pixel's decision reads: patch + 2 · context."""
        return self.patch + 2 * self.context

    def _trunk(self, x: torch.Tensor, dense: bool) -> torch.Tensor:
        """Table I up to the flatten, unpadded (zero-padded with ``padding="zero"``). On
        windows (``dense=False``): 2×2 pooling of stride 2, (M, C, window, window) → (M, 8,
        grid, grid). Dense (neighbours only): stride-1 pooling and dilations doubling after
        each pooling, (N, C, h, w) → (N, 8, h − 15, w − 15), the pooled grid of a window at
        offsets 4·(i, j) from its first cell.
        """
        zeros = int(self.padding == "zero")
        for level, convs in enumerate((self.conv1, self.conv2)):
            dilation = 2**level if dense else 1
            for conv in convs:
                conv = cast(nn.Conv2d, conv)  # nn.ModuleList is not generic
                x = F.conv2d(x, conv.weight, conv.bias, padding=zeros, dilation=dilation)
                x = F.leaky_relu(x, _SLOPE)
            x = F.max_pool2d(x, 2, stride=1, dilation=dilation) if dense else F.max_pool2d(x, 2)
        for conv in self.conv3:
            x = F.leaky_relu(conv(x), _SLOPE)
        return x

    def features(self, images: torch.Tensor, ugsm_logits: torch.Tensor) -> torch.Tensor:
        """Every pixel's flattened pooled grid ⊕ its UGSM logits: images (N, C, H, W) in
        [−1, 1] (reflected at the borders, so H and W > patch/2 + :attr:`context`) and logits
        (N, n_classes, H, W) → (N, 8·grid² + n_classes, H, W), in the order
        :meth:`classify_patches` flattens.
        """
        height, width = images.shape[-2:]
        if self.padding == "zero":
            rows = self._window_rows(images, None)
            grids = rows.reshape(images.shape[0], height, width, -1).permute(0, 3, 1, 2)
            return torch.cat([grids, ugsm_logits], dim=1)
        x = self._trunk(self._reflected(images), True)
        cells = [
            x[..., 4 * i : 4 * i + height, 4 * j : 4 * j + width]
            for i in range(self.grid)
            for j in range(self.grid)
        ]
        return torch.cat([torch.stack(cells, dim=2).flatten(1, 2), ugsm_logits], dim=1)

    def rows(
        self, images: torch.Tensor, ugsm_logits: torch.Tensor, chosen: torch.Tensor
    ) -> torch.Tensor:
        """:meth:`features` of the ``chosen`` pixels only, (M,) flat indices into (N, H, W)
        → (M, 8·grid² + n_classes); with zero padding only their windows are computed."""
        if self.padding == "neighbours":
            features = self.features(images, ugsm_logits)
            return features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])[chosen]
        logits = ugsm_logits.permute(0, 2, 3, 1).reshape(-1, ugsm_logits.shape[1])[chosen]
        return torch.cat([self._window_rows(images, chosen), logits], dim=1)

    def _reflected(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) reflected at the borders so that every pixel has its whole window."""
        before = self.patch // 2 + self.context
        after = self.window - 1 - before
        return F.pad(images, (before, after, before, after), mode="reflect")

    def _window_rows(self, images: torch.Tensor, chosen: torch.Tensor | None) -> torch.Tensor:
        """Each pixel's (or each ``chosen`` flat pixel's) window through the trunk on its own,
        (N, C, H, W) → (M, 8·grid²), M = N·H·W or len(chosen); the windows in chunks of
        :data:`WINDOW_CHUNK`."""
        channels = images.shape[1]
        columns = F.unfold(self._reflected(images), self.window).transpose(1, 2)
        windows = columns.reshape(-1, channels, self.window, self.window)
        if chosen is not None:
            windows = windows[chosen]
        parts = [self._trunk(part, dense=False).flatten(1) for part in windows.split(WINDOW_CHUNK)]
        return torch.cat(parts) if parts else windows.new_zeros(0, 8 * self.grid**2)

    def forward(self, images: torch.Tensor, ugsm_logits: torch.Tensor) -> torch.Tensor:
        """Dense LCGAR: images (N, C, H, W) in [−1, 1] and UGSM logits (N, n_classes, H, W)
        → (N, n_classes, H, W) logits.
        """
        features = self.features(images, ugsm_logits)
        n, channels, height, width = features.shape
        rows = self.head(features.permute(0, 2, 3, 1).reshape(-1, channels))
        return rows.reshape(n, height, width, -1).permute(0, 3, 1, 2)

    def classify_patches(self, windows: torch.Tensor, ugsm_logits: torch.Tensor) -> torch.Tensor:
        """Table I literally, on cut-out windows: (M, C, window, window) in [−1, 1] and the
        UGSM logits of their pixels (M, n_classes) → (M, n_classes) logits.
        """
        flat = self._trunk(windows, dense=False).flatten(1)
        return self.head(torch.cat([flat, ugsm_logits], dim=1))


def curriculum_mask(
    difficulty: torch.Tensor,
    progress: float,
    start: float = 0.5,
    ramp: float = 0.5,
    among: torch.Tensor | None = None,
) -> torch.Tensor:
    """The curriculum, easy → hard (tomoloop's schedule; see docs/references.md): True where
    ``difficulty`` (any shape) is at or below its q-quantile, q rising linearly from ``start`` at
    progress 0 to 1 at progress ``ramp`` (every pixel admitted from then on). ``among`` (bool, the
    shape of ``difficulty``): only those pixels take part, in the quantile and in the result.
    """
    q = 1.0 if ramp <= 0 else start + (1.0 - start) * min(max(progress, 0.0) / ramp, 1.0)
    every = torch.ones_like(difficulty, dtype=torch.bool) if among is None else among
    flat = difficulty.detach()[every]
    if q >= 1.0 or flat.numel() == 0:
        return every
    rank = max(1, math.ceil(q * flat.numel()))
    return (difficulty <= flat.kthvalue(rank).values) & every


def sample_pixels(mask: torch.Tensor, limit: int | None) -> torch.Tensor:
    """Flat indices (M,) int64 of the True entries of ``mask`` (any shape): all of them, or
    ``limit`` drawn at random without replacement when there are more.
    """
    chosen = mask.reshape(-1).nonzero().squeeze(1)
    if limit is None or chosen.numel() <= limit:
        return chosen
    return chosen[torch.randperm(chosen.numel(), device=chosen.device)[:limit]]


class MatPhase(nn.Module):
    """UGSM (a U-Net) + dense LCGAR: (N, C_in, H, W) → (N, n_classes, H, W) LCGAR logits, H and W
    divisible by 16. ``base``, ``depth``, ``dropout`` shape the UGSM; ``patch`` and
    ``lcgar_dropout`` the LCGAR (Tabassum et al. n.d., App. Table I: 20 %); ``curriculum_start`` and
    ``curriculum_ramp`` the curriculum (:func:`curriculum_mask`); ``lcgar_pixels`` caps the admitted
    pixels the LCGAR trains on per batch (``None``: all of them).

    ``lcgar_padding``: what the LCGAR's 3×3 convolutions read past a pixel's window, its
    real ``"neighbours"`` (tomoloop's default) or Table I's ``"zero"`` s (see :class:`LCGAR`).

    ``schedule``: ``"joint"`` (tomoloop's default) trains UGSM and LCGAR together from the
    start; ``"two_stage"`` is the appendix's (App. §II: UGSM 100 epochs, then LCGAR 15 on its
    output): the first ``ugsm_share`` of training (default 100/115) trains only the UGSM, the
    rest only the LCGAR on the outputs of the UGSM held fixed (inference mode, no gradient),
    with the curriculum run over that second stage.

    Chosen where Tabassum et al. n.d. are silent: the LCGAR sees the UGSM logits detached, so
    only the UGSM term trains the UGSM; [0, 1] slices map to [−1, 1] by 2x − 1, clipped; the
    LCGAR trains on at most 4096 random admitted pixels per batch (the appendix's pixel batches
    are 1024; its 128-wide per-pixel head costs two thirds of a dense training pass).
    """

    encoder_prefixes = ("ugsm.down",)  # ``--freeze encoder``: the UGSM's encoder

    def __init__(
        self,
        in_channels: int = 1,
        n_classes: int = 2,
        base: int = 16,
        depth: int = 4,
        dropout: float = 0.1,
        patch: int = 8,
        lcgar_dropout: float = 0.2,
        curriculum_start: float = 0.5,
        curriculum_ramp: float = 0.5,
        lcgar_pixels: int | None = 4096,
        schedule: str = "joint",
        ugsm_share: float = 100 / 115,
        lcgar_padding: str = "neighbours",
    ) -> None:
        super().__init__()
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule {schedule!r}: choose one of {', '.join(SCHEDULES)}")
        if not 0 < ugsm_share < 1:
            raise ValueError(f"ugsm_share {ugsm_share} must lie between 0 and 1")
        self.schedule = schedule
        self.ugsm_share = ugsm_share
        self.multiple = max(SIDE_MULTIPLE, 2**depth)
        self.ugsm = UNet(in_channels, n_classes, base=base, depth=depth, dropout=dropout)
        self.lcgar = LCGAR(
            in_channels, n_classes, patch=patch, dropout=lcgar_dropout, padding=lcgar_padding
        )
        self.curriculum_start = curriculum_start
        self.curriculum_ramp = curriculum_ramp
        self.lcgar_pixels = lcgar_pixels

    @staticmethod
    def scale_input(images: torch.Tensor) -> torch.Tensor:
        """[0, 1] slices → [−1, 1], clipped (Tabassum et al. n.d., App. §II: LCGAR input range)."""
        return (2 * images - 1).clamp(-1, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        check_sides(images, self.multiple)
        ugsm_logits = self.ugsm(images)
        return self.lcgar(self.scale_input(images), ugsm_logits.detach())

    def admitted(
        self,
        ugsm_logits: torch.Tensor,
        target: torch.Tensor,
        progress: float,
        among: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(N, H, W) bool: the pixels the curriculum admits among ``among`` (N, H, W) bool
        (None: all), a pixel's difficulty being 1 − the UGSM probability of its true class
        (detached).
        """
        probs = ugsm_logits.detach().float().softmax(dim=1)
        difficulty = 1 - probs.gather(1, target[:, None])[:, 0]
        return curriculum_mask(
            difficulty, progress, self.curriculum_start, self.curriculum_ramp, among
        )

    def training_loss(
        self,
        images: torch.Tensor,
        target: torch.Tensor,
        weight: torch.Tensor | None,
        loss: Loss,
        progress: float,
    ) -> torch.Tensor:
        """UGSM loss on every pixel + LCGAR loss on the pixels the curriculum admits (at
        most ``lcgar_pixels``), those M pixels passed to ``loss`` as a (1, ·, M, 1) image.
        Pixels of weight 0 (unlabelled ones) take no part in the curriculum. With the
        two-stage schedule only one of the two terms, by ``progress`` (see the class).
        """
        check_sides(images, self.multiple)
        if self.schedule == "joint":
            ugsm_logits = self.ugsm(images)
            lcgar_loss = self._lcgar_loss(images, ugsm_logits, target, weight, loss, progress)
            return loss(ugsm_logits, target, weight) + lcgar_loss
        if progress < self.ugsm_share:
            return loss(self.ugsm(images), target, weight)
        self.ugsm.eval()
        with torch.no_grad():
            ugsm_logits = self.ugsm(images)
        self.ugsm.train(self.training)
        stage = (progress - self.ugsm_share) / (1 - self.ugsm_share)
        return self._lcgar_loss(images, ugsm_logits, target, weight, loss, stage)

    def _lcgar_loss(
        self,
        images: torch.Tensor,
        ugsm_logits: torch.Tensor,
        target: torch.Tensor,
        weight: torch.Tensor | None,
        loss: Loss,
        progress: float,
    ) -> torch.Tensor:
        """The LCGAR term of :meth:`training_loss`, the curriculum at ``progress``."""
        among = None if weight is None else weight > 0
        chosen = sample_pixels(
            self.admitted(ugsm_logits, target, progress, among), self.lcgar_pixels
        )
        rows = self.lcgar.rows(self.scale_input(images), ugsm_logits.detach(), chosen)
        lcgar_logits = self.lcgar.head(rows).T[None, :, :, None]
        lcgar_weight = None if weight is None else _column(weight, chosen)
        return loss(lcgar_logits, _column(target, chosen), lcgar_weight)


def _column(values: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """(N, H, W) per-pixel values → those of the ``chosen`` flat indices as a (1, M, 1) image."""
    return values.reshape(-1)[chosen][None, :, None]


def _stretch_rows(array: np.ndarray, height: int, linear: bool) -> np.ndarray:
    """(h, W) → (height, W) along rows (pixel-centre sampling): linear or nearest."""
    source = (np.arange(height) + 0.5) * (array.shape[0] / height) - 0.5
    source = np.clip(source, 0, array.shape[0] - 1)
    if not linear:
        return array[np.floor(source + 0.5).astype(int)]
    low = np.floor(source).astype(int)
    high = np.minimum(low + 1, array.shape[0] - 1)
    frac = (source - low)[:, None]
    values = array.astype(np.float64)
    return (1 - frac) * values[low] + frac * values[high]


def remove_rows_and_resize(
    image: np.ndarray, labels: np.ndarray, k: int = 10
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Tabassum et al. n.d.'s augmentation (App. §II, Pre-processing): k versions of a slice,
    version i (1 … k) with its top i rows removed and stretched back to the original size.

    image (H, W) float (or integer: returned float32), labels (H, W) integer; each version is
    (image (H, W) of the image's float dtype, linearly interpolated; labels (H, W) of the
    labels' dtype, nearest neighbour, so no new classes). Needs 1 ≤ k < H.
    """
    if image.shape != labels.shape or image.ndim != 2:
        raise ValueError(f"image {image.shape} and labels {labels.shape} must be one (H, W)")
    height = image.shape[0]
    if not 1 <= k < height:
        raise ValueError(f"k={k} rows to remove: need 1 ≤ k < the image height {height}")
    dtype = image.dtype if np.issubdtype(image.dtype, np.floating) else np.float32
    return [
        (
            _stretch_rows(image[i:], height, linear=True).astype(dtype),
            _stretch_rows(labels[i:], height, linear=False),
        )
        for i in range(1, k + 1)
    ]


def _neighbour_counts(mask: np.ndarray, radius: int) -> np.ndarray:
    """(H, W) bool → (H, W) int: True pixels among each pixel's in-image neighbours
    (the (2·radius + 1)² square without the pixel itself).
    """
    side = 2 * radius + 1
    padded = np.pad(mask.astype(np.int32), radius)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (side, side))
    return windows.sum(axis=(-2, -1)) - mask


def smooth_labels_knn(
    labels: np.ndarray, exclusive: list[tuple[int, int]], radius: int = 1
) -> np.ndarray:
    """Tabassum et al. n.d.'s domain rule (App. §II, Pre-processing): two classes of an exclusive
    pair (a, b) cannot touch (carbon binder and Ni), so a pixel of class a whose neighbours are
    mostly (more than half of the labelled ones inside the image) class b becomes b, and the other
    way round.

    labels (H, W) integer → (H, W) of the same dtype. Neighbours: the k = (2·radius + 1)² − 1
    nearest pixels (k = 8 at radius 1). One pass, decided on the input labels; classes in no
    pair never change.
    """
    if any(a == b for a, b in exclusive):
        raise ValueError(f"exclusive pairs {exclusive} must name two different classes")
    valid = _neighbour_counts(labels != IGNORE, radius)
    counts = {c: _neighbour_counts(labels == c, radius) for pair in exclusive for c in pair}
    smoothed = labels.copy()
    for a, b in exclusive:
        for this, other in ((a, b), (b, a)):
            smoothed[(labels == this) & (2 * counts[other] > valid)] = other
    return smoothed
