"""Building blocks shared by the segmentation networks (``tomoloop.networks.registry``)."""

from __future__ import annotations

from collections.abc import Sequence

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


def up_path(widths: Sequence[int]) -> tuple[nn.ModuleList, nn.ModuleList]:
    """A U-Net decoder for encoder levels of ``widths`` channels (shallowest first): per
    level, deepest first, a 2×2 transposed convolution doubling the side and a
    :func:`conv_block` merging it with the encoder map of that size.
    """
    depth = len(widths) - 1
    up = nn.ModuleList(
        nn.ConvTranspose2d(widths[k + 1], widths[k], 2, stride=2) for k in reversed(range(depth))
    )
    merge = nn.ModuleList(conv_block(2 * widths[k], widths[k]) for k in reversed(range(depth)))
    return up, merge


def decode(
    x: torch.Tensor,
    skips: list[torch.Tensor],
    up: nn.ModuleList,
    merge: nn.ModuleList,
    dropout: nn.Module,
) -> torch.Tensor:
    """Run an :func:`up_path` decoder from the deepest map ``x``; ``skips`` (encoder maps,
    shallowest first) are consumed from the end. Dropout before each level (MC dropout).
    """
    for level_up, level_merge in zip(up, merge, strict=True):
        x = level_merge(torch.cat([level_up(dropout(x)), skips.pop()], dim=1))
    return x
