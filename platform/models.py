"""Semantic segmentation networks and their registry of names (``--arch NAME``).

Every network maps (N, C_in, H, W) images to (N, n_classes, H, W) logits, with H and W
divisible by 16, and keeps its dropout layers usable at inference for MC dropout.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from tomoloop.errors import TomoloopError
from tomoloop.layers import conv_block


class UNet(nn.Module):
    """U-Net as seed 002 §3.1 adapts it (Ronneberger et al.): 3×3 convolutions from 16
    channels, doubled at every level, max pooling down to a 256-channel 8×8 map from a
    128×128 input (``base=16, depth=4``); transposed convolutions up, concatenated with the
    encoder map of the same size. Dropout before each decoder level (MC dropout).
    """

    def __init__(
        self,
        in_channels: int = 1,
        n_classes: int = 2,
        base: int = 16,
        depth: int = 4,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.depth = depth
        widths = [base * 2**level for level in range(depth + 1)]
        self.down = nn.ModuleList([conv_block(in_channels, widths[0])])
        self.down.extend(conv_block(widths[k], widths[k + 1]) for k in range(depth))
        self.pool = nn.MaxPool2d(2)
        self.dropout = nn.Dropout2d(dropout)
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(widths[k + 1], widths[k], 2, stride=2)
            for k in reversed(range(depth))
        )
        self.merge = nn.ModuleList(
            conv_block(2 * widths[k], widths[k]) for k in reversed(range(depth))
        )
        self.head = nn.Conv2d(widths[0], n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = 2**self.depth
        if x.shape[-1] % size or x.shape[-2] % size:
            raise ValueError(f"input sides {tuple(x.shape[-2:])} must be divisible by {size}")
        skips = []
        for k, block in enumerate(self.down):
            x = block(x if k == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for up, merge in zip(self.up, self.merge, strict=True):
            x = merge(torch.cat([up(self.dropout(x)), skips.pop()], dim=1))
        return self.head(x)


MODELS: dict[str, Callable[..., nn.Module]] = {"unet": UNet}


def build_model(name: str, in_channels: int = 1, n_classes: int = 2, **options) -> nn.Module:
    """A network by registry name, e.g. ``build_model("unet", 1, 3)``."""
    if name not in MODELS:
        raise TomoloopError(
            f"unknown architecture {name!r}: choose one of {', '.join(sorted(MODELS))}"
        )
    return MODELS[name](in_channels=in_channels, n_classes=n_classes, **options)
