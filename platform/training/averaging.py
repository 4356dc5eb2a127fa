"""A moving average of a network's weights during training (``TrainConfig.average``):
the decay schedule and the in-place update."""

from __future__ import annotations

import torch
from torch import nn


def average_decay(decay: float, step: int) -> float:
    """The moving average's decay after optimiser step ``step`` (0-based): ``decay``, but
    at most (1 + step) / (10 + step) early on, so the average follows the first steps
    instead of lingering at the starting weights for about 1 / (1 − decay) steps.
    """
    return min(decay, (1 + step) / (10 + step))


def update_average(average: nn.Module, model: nn.Module, decay: float) -> None:
    """``average`` ← decay · ``average`` + (1 − decay) · ``model``, in place, for every
    floating-point weight and buffer (BatchNorm statistics too); integer buffers (batch
    counts) are copied. Both modules have the same architecture.
    """
    live = model.state_dict()
    with torch.no_grad():
        for key, value in average.state_dict().items():
            if value.dtype.is_floating_point:
                value.lerp_(live[key], 1 - decay)
            else:
                value.copy_(live[key])
