"""Training semantic segmentation networks: one optimisation step, epochs, early stopping,
checkpoints that survive a crash, learning curves.

A network may define ``training_loss(images, target, weight, loss, progress)`` to train
more than its final logits (E-Net trains every member, MatPhase follows a curriculum);
``progress`` is the fraction of training done, in [0, 1]. Otherwise the loss is taken on
``model(images)``.
"""

from __future__ import annotations

import torch
from torch import nn

from tomoloop.losses import Loss


def compute_loss(
    model: nn.Module,
    images: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    loss: Loss,
    progress: float = 0.0,
) -> torch.Tensor:
    """Scalar training loss of a batch: images (N, C, H, W) float, target (N, H, W) int64,
    weight (N, H, W) float or None.
    """
    custom = getattr(model, "training_loss", None)
    if custom is not None:
        return custom(images, target, weight, loss, progress)
    return loss(model(images), target, weight)
