"""LRCS-Net (Su et al. 2022, abstract; docs/references.md): an asymmetric-depth SegNet-like
encoder–decoder for multiphase nano-CT segmentation.

The seed text (Su et al. 2022, highlights) gives only "asymmetrical depth encoder–decoder, derived
from Seg-Net and Xlearn". The layer plan follows the authors' published code, SegmentPy
(github.com/ZeliangSu/SegmentPy: ``docs/model.rst`` "LRCS-Net" table and
``model_LRCS_lecun_thinner_encoder`` in ``src/segmentpy/tf114/model.py``): a *thin* encoder of one
convolution per level (cs, 2cs, 4cs channels) with max pooling, a sigmoid bottleneck convolution,
and a *deeper* decoder of two convolutions per level that upsamples with SegNet's max-unpooling (the
encoder's pooling indices), then a convolution to the class logits. The published asymmetry is
therefore a shallower encoder than decoder; both depths are options here.
"""

from __future__ import annotations

import torch
from torch import nn

from tomoloop.networks.layers import SIDE_MULTIPLE, check_sides


def _conv(in_channels: int, out_channels: int, kernel: int, batch_norm: bool) -> list[nn.Module]:
    """One same-size convolution, optional batch norm, ReLU."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=not batch_norm)
    ]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    layers.append(nn.ReLU(inplace=True))
    return layers


def conv_stack(
    in_channels: int, out_channels: int, convs: int, kernel: int, batch_norm: bool
) -> nn.Sequential:
    """``convs`` same-size convolutions (≥ 1); the last one changes the channel count."""
    widths = [in_channels] * convs + [out_channels]
    layers = [
        layer for k in range(convs) for layer in _conv(widths[k], widths[k + 1], kernel, batch_norm)
    ]
    return nn.Sequential(*layers)


class LRCSNet(nn.Module):
    """LRCS-Net: (N, C_in, H, W) → (N, n_classes, H, W) logits, H and W divisible by 16.

    Encoder level k (k = 0 … depth−1) has ``encoder_convs`` convolutions to ``base·2^k``
    channels (no batch norm, as published) and 2×2 max pooling with indices; a sigmoid
    convolution closes the encoder at H/2^depth (the published ``conv4sigm``). The decoder has
    ``decoder_convs`` convolutions with batch norm at the bottom and at every level, dropout
    (kept for MC dropout) and max-unpooling between levels, then a convolution to the logits.
    Defaults (``depth=3``, one encoder and two decoder convolutions per level) are the
    published plan: 4 encoder convolutions against 8 decoder ones plus the logits.

    Where the paper and code are silent or too large for CPU, chosen here: ``base=16``
    (SegmentPy's default is 80 kernels of 9×9), ``kernel=3``, ReLU, dropout 0.1 before each
    unpooling (as the authors' ``LRCS13`` variant puts dropout on the decoder convolutions).
    """

    encoder_prefixes = ("encoder",)  # ``--freeze encoder`` (the bottleneck stays free)

    def __init__(
        self,
        in_channels: int = 1,
        n_classes: int = 2,
        base: int = 16,
        depth: int = 3,
        encoder_convs: int = 1,
        decoder_convs: int = 2,
        kernel: int = 3,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.multiple = max(SIDE_MULTIPLE, 2**depth)
        widths = [base * 2**level for level in range(depth)]
        self.encoder = nn.ModuleList(
            conv_stack(c_in, c_out, encoder_convs, kernel, batch_norm=False)
            for c_in, c_out in zip([in_channels, *widths[:-1]], widths, strict=True)
        )
        self.pool = nn.MaxPool2d(2, return_indices=True)
        self.bottleneck = nn.Sequential(
            nn.Conv2d(widths[-1], widths[-1], kernel, padding=kernel // 2), nn.Sigmoid()
        )
        self.decoder = nn.ModuleList(
            [conv_stack(widths[-1], widths[-1], decoder_convs, kernel, batch_norm=True)]
        )
        self.decoder.extend(
            conv_stack(widths[level], widths[max(level - 1, 0)], decoder_convs, kernel, True)
            for level in reversed(range(depth))
        )
        self.dropout = nn.Dropout2d(dropout)
        self.unpool = nn.MaxUnpool2d(2)
        self.head = nn.Conv2d(widths[0], n_classes, kernel, padding=kernel // 2)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(N, C_in, H, W) → bottleneck (N, base·2^(depth−1), H/2^depth, W/2^depth) and the
        pooling indices of every level, finest first.
        """
        indices = []
        for block in self.encoder:
            x, where = self.pool(block(x))
            indices.append(where)
        return self.bottleneck(x), indices

    def decode(self, x: torch.Tensor, indices: list[torch.Tensor]) -> torch.Tensor:
        """Bottleneck and pooling indices → (N, n_classes, H, W) logits."""
        bottom, *levels = self.decoder
        x = bottom(x)
        for block, where in zip(levels, reversed(indices), strict=True):
            x = block(self.unpool(self.dropout(x), where))
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_sides(x, self.multiple)
        return self.decode(*self.encode(x))
