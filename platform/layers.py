"""Building blocks shared by the segmentation networks (``tomoloop.models``)."""

from __future__ import annotations

from torch import nn


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
