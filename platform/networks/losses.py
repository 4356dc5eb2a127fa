"""Segmentation losses (Quenum et al. 2023, eqs. 1–4; docs/references.md), multi-class, on logits.

Every loss takes ``logits`` (N, C, H, W) float and ``target`` (N, H, W) int64 class
indices, and optional per-pixel ``weight`` (N, H, W) (label tiers: expert > annotator >
auto), and returns a scalar tensor. Soft overlap losses average over classes present in
the batch's target or prediction.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Loss = Callable[..., torch.Tensor]
_EPS = 1e-6


def _probabilities(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    probs = logits.float().softmax(dim=1)
    onehot = F.one_hot(target, probs.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
    return probs, onehot


def _weighted(per_pixel: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    if weight is None:
        return per_pixel.mean()
    return (per_pixel * weight).sum() / weight.sum().clamp_min(_EPS)


def cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    class_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """(Class-weighted) cross-entropy; binary cross-entropy (eq. 3) when C = 2."""
    per_pixel = F.cross_entropy(logits.float(), target, weight=class_weights, reduction="none")
    return _weighted(per_pixel, weight)


def balanced_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    beta: float = 0.5,
) -> torch.Tensor:
    """Eq. 4: −β y log ŷ − (1 − β)(1 − y) log(1 − ŷ), summed over classes (one vs rest)."""
    probs, onehot = _probabilities(logits, target)
    probs = probs.clamp(_EPS, 1 - _EPS)
    per_class = -beta * onehot * probs.log() - (1 - beta) * (1 - onehot) * (1 - probs).log()
    return _weighted(per_class.sum(dim=1), weight)


def _tversky_index(
    logits: torch.Tensor, target: torch.Tensor, beta: float, weight: torch.Tensor | None
) -> torch.Tensor:
    """Per-class Tversky index (eq. 1): Σyŷ / (Σyŷ + β Σ(1−y)ŷ + (1−β) Σy(1−ŷ))."""
    probs, onehot = _probabilities(logits, target)
    if weight is not None:
        probs, onehot = probs * weight[:, None], onehot * weight[:, None]
    dims = (0, 2, 3)
    tp = (probs * onehot).sum(dims)
    fp = probs.sum(dims) - tp  # Σ(1 − y)ŷ
    fn = onehot.sum(dims) - tp  # Σy(1 − ŷ)
    present = (onehot.sum(dims) + probs.sum(dims)) > _EPS
    index = (tp + _EPS) / (tp + beta * fp + (1 - beta) * fn + _EPS)
    return index[present]


def tversky(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    beta: float = 0.3,
) -> torch.Tensor:
    """1 − Tversky index (eq. 1, Salehi et al.), β weighs false positives (α = 1 − β). The
    paper gives no β; the default 0.3 puts 0.7 on the false negatives, as its sources do,
    which gave the thin carbon binder the higher IoU and Dice (``bench/tversky_beta.py``,
    docs/seeds.md)."""
    return 1 - _tversky_index(logits, target, beta, weight).mean()


def dice(
    logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """1 − soft Dice: the Tversky loss with β = 1/2."""
    return tversky(logits, target, weight, beta=0.5)


def focal_tversky(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    beta: float = 0.3,
    gamma: float = 4 / 3,
) -> torch.Tensor:
    """Focal Tversky loss Σ_c (1 − TI_c)^(1/γ), γ = 4/3 (eq. 2; Abraham & Khan, ref. [53]).

    Quenum et al. 2023 print eq. 2 as 1 − TI^γ; its source [53] defines (1 − TI)^(1/γ), which is
    what focuses training on hard (low-TI) classes, so that form is used here.
    """
    index = _tversky_index(logits, target, beta, weight)
    return ((1 - index).clamp_min(0) ** (1 / gamma)).mean()


LOSSES: dict[str, Loss] = {
    "ce": cross_entropy,
    "bce": cross_entropy,
    "balanced_ce": balanced_cross_entropy,
    "dice": dice,
    "tversky": tversky,
    "focal_tversky": focal_tversky,
}

# the losses that take ``class_weights`` (per-class weights of the cross-entropy)
WEIGHTED_LOSSES = ("ce", "bce")
# the losses that take ``beta`` (the Tversky weight of the false positives)
TVERSKY_LOSSES = ("tversky", "focal_tversky")


def get_loss(name: str) -> Loss:
    """A loss by name (``--loss``): one of :data:`LOSSES`."""
    try:
        return LOSSES[name]
    except KeyError:
        from tomoloop.errors import TomoloopError

        raise TomoloopError(
            f"unknown loss {name!r}: choose one of {', '.join(sorted(LOSSES))}"
        ) from None
