"""U-Net (Quenum et al. 2023, §3.1, after Ronneberger et al. 2015; docs/references.md): the
encoder–decoder every other network is compared with, and a member of E-Net and MatPhase.
"""

from __future__ import annotations

import torch
from torch import nn

from tomoloop.networks.layers import check_sides, conv_block, decode, up_path


class UNet(nn.Module):
    """U-Net as Quenum et al. 2023 (§3.1) adapt it (Ronneberger et al.): 3×3 convolutions from 16
    channels, doubled at every level, max pooling down to a 256-channel 8×8 map from a
    128×128 input (``base=16, depth=4``); transposed convolutions up, concatenated with the
    encoder map of the same size. Dropout before each decoder level (MC dropout).
    """

    encoder_prefixes = ("down",)  # what ``--freeze encoder`` freezes

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
        self.up, self.merge = up_path(widths)
        self.head = nn.Conv2d(widths[0], n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_sides(x, 2**self.depth)
        skips = []
        for k, block in enumerate(self.down):
            x = block(x if k == 0 else self.pool(x))
            skips.append(x)
        return self.head(decode(skips.pop(), skips, self.up, self.merge, self.dropout))
