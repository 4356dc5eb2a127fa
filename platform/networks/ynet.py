"""Y-Net (Quenum et al. 2023, §3.2, after Quenum et al. 2021; docs/references.md): a
regular-convolution module, a dilated-convolution module and a pyramid-pooling module read the same
image; their 8×8 maps (from a 128×128 input) are fused and decoded back to full-resolution logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tomoloop.networks.layers import check_sides, decode, up_path


def conv_bn_relu(
    in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1
) -> nn.Sequential:
    """One 3×3 convolution (padding keeps the size at stride 1), batch norm and ReLU."""
    return nn.Sequential(
        nn.Conv2d(
            in_channels,
            out_channels,
            3,
            stride=stride,
            padding=dilation,
            dilation=dilation,
            bias=False,
        ),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class RegularConvolutionModule(nn.Module):
    """Convolution alternating with 2×2 max pooling, channels doubling at every level
    (Quenum et al. 2023, §3.2: from 24 channels down to an 8×8 map for a 128×128 input).
    """

    def __init__(self, in_channels: int, widths: list[int]) -> None:
        super().__init__()
        self.levels = nn.ModuleList([conv_bn_relu(in_channels, widths[0])])
        self.levels.extend(conv_bn_relu(widths[k], widths[k + 1]) for k in range(len(widths) - 1))
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(N, C_in, H, W) → one map per level, (N, widths[k], H / 2**k, W / 2**k)."""
        maps = []
        for k, level in enumerate(self.levels):
            x = level(x if k == 0 else self.pool(x))
            maps.append(x)
        return maps


class DilatedConvolutionModule(nn.Module):
    """A constant number of channels throughout; every stage is a dilated 3×3 convolution followed
    by a 3×3 convolution of stride 2 (Quenum et al. 2023, §3.2). The plain strided convolution after
    the dilated one lets every pixel reach the output (a dilated convolution of stride 2 alone
    samples only every other pixel).
    """

    def __init__(self, in_channels: int, width: int, stages: int, dilation: int) -> None:
        super().__init__()
        self.stages = nn.Sequential(
            *(
                nn.Sequential(
                    conv_bn_relu(in_channels if k == 0 else width, width, dilation=dilation),
                    conv_bn_relu(width, width, stride=2),
                )
                for k in range(stages)
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, H, W) → (N, width, H / 2**stages, W / 2**stages)."""
        return self.stages(x)


class PyramidPoolingModule(nn.Module):
    """PSPNet's pyramid pooling (Zhao et al.): average-pool the map into b×b bins for each b,
    1×1-convolve, upsample back and concatenate with the map itself (Quenum et al. 2023, §3.2, names
    the module only). The branches have no batch norm: a 1×1 bin holds one value per channel and
    image.
    """

    def __init__(self, channels: int, bins: tuple[int, ...]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(b), nn.Conv2d(channels, channels, 1), nn.ReLU())
            for b in bins
        )
        self.out_channels = channels * (1 + len(bins))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) → (N, C * (1 + len(bins)), h, w)."""
        size = x.shape[-2:]
        pooled = [
            F.interpolate(branch(x), size=size, mode="bilinear", align_corners=False)
            for branch in self.branches
        ]
        return torch.cat([x, *pooled], dim=1)


class YNet(nn.Module):
    """Y-Net as Quenum et al. 2023 (§3.2) adapt it. The regular-convolution module (24 channels,
    doubling, max pooling to 8×8 from 128×128) and the dilated-convolution module (16
    channels throughout, stride 2 to 8×8) read the image side by side; the pyramid-pooling
    module pools the dilated map at several scales and is concatenated with it. The two 8×8
    maps are concatenated and fused by a 1×1 convolution, then decoded like a U-Net:
    transposed convolutions up, concatenated with the regular module's map of the same size.
    Dropout before each decoder level (MC dropout).

    The paper does not give the dilation rate, the pyramid bins, the fusion or the decoder;
    those are choices (bins that divide an 8×8 map; a decoder like the U-Net of §3.1).
    """

    encoder_prefixes = ("regular", "dilated", "pyramid")  # ``--freeze encoder``

    def __init__(
        self,
        in_channels: int = 1,
        n_classes: int = 2,
        base: int = 24,  # Quenum et al. 2023, §3.2: regular module from 24
        dilated_width: int = 16,  # Quenum et al. 2023, §3.2: 16 throughout
        depth: int = 4,  # Quenum et al. 2023, §3.2: 128² down to 8²
        dilation: int = 2,
        bins: tuple[int, ...] = (1, 2, 4),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.depth = depth
        widths = [base * 2**level for level in range(depth + 1)]
        self.regular = RegularConvolutionModule(in_channels, widths)
        self.dilated = DilatedConvolutionModule(in_channels, dilated_width, depth, dilation)
        self.pyramid = PyramidPoolingModule(dilated_width, bins)
        self.fuse = nn.Sequential(
            nn.Conv2d(widths[-1] + self.pyramid.out_channels, widths[-1], 1, bias=False),
            nn.BatchNorm2d(widths[-1]),
            nn.ReLU(inplace=True),
        )
        self.dropout = nn.Dropout2d(dropout)
        self.up, self.merge = up_path(widths)
        self.head = nn.Conv2d(widths[0], n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, H, W) float → (N, n_classes, H, W) logits; H, W divisible by 2**depth."""
        check_sides(x, 2**self.depth)
        skips = self.regular(x)
        context = self.pyramid(self.dilated(x))
        x = self.fuse(torch.cat([skips.pop(), context], dim=1))  # the two 8×8 maps
        return self.head(decode(x, skips, self.up, self.merge, self.dropout))
