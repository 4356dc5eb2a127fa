"""Building blocks shared by the segmentation networks (``tomoloop.models``)."""

from __future__ import annotations

import torch
from torch import nn

SIDE_MULTIPLE = 16  # every network takes sides divisible by 16 (the tiling contract)


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Two 3×3 convolutions, each with batch norm and ReLU; the spatial size is kept."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def check_sides(x: torch.Tensor, multiple: int = SIDE_MULTIPLE) -> None:
    """Refuse an (N, C, H, W) input whose H or W is not divisible by ``multiple``."""
    if x.shape[-1] % multiple or x.shape[-2] % multiple:
        raise ValueError(f"input sides {tuple(x.shape[-2:])} must be divisible by {multiple}")
