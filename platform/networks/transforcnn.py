"""TransforCNN (Quenum et al. 2023, §3.3; docs/references.md): a ViT encoder over 16×16 sub-patches
whose every second block is reshaped into a 2D map and fused into a CNN decoder.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from tomoloop.networks.layers import check_sides, conv_block

PATCH = 16  # Quenum et al. 2023, §3.3: 16×16 sub-patches
REFERENCE_SIDE = 128  # Quenum et al. 2023, §3: the 128×128 patches the networks were trained on


class FourierPositions(nn.Module):
    """Fourier-feature positional encoding (Tancik et al. 2020): a patch at (row, column)
    gets [cos 2πBv, sin 2πBv] with v its position in units of a 128-pixel side and B a fixed
    Gaussian matrix (dim / 2, 2) of standard deviation ``scale``. Computed from the patch
    grid, so any grid size works; B is a buffer, so a checkpoint restores the same encoding.
    """

    def __init__(self, dim: int, scale: float) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"the embedding dimension {dim} must be even")
        self.register_buffer("frequencies", scale * torch.randn(dim // 2, 2))

    frequencies: torch.Tensor

    def forward(self, rows: int, columns: int) -> torch.Tensor:
        """(rows * columns, dim) encodings of a patch grid, row-major like the tokens."""
        device = self.frequencies.device
        grid = torch.meshgrid(
            torch.arange(rows, device=device),
            torch.arange(columns, device=device),
            indexing="ij",
        )
        positions = torch.stack(grid, dim=-1).reshape(-1, 2).float() * PATCH / REFERENCE_SIDE
        angles = 2 * math.pi * positions @ self.frequencies.T
        return torch.cat([angles.cos(), angles.sin()], dim=-1)


class EncoderBlock(nn.Module):
    """Pre-norm transformer encoder block (ViT): multi-head self-attention and an MLP, each
    residual. Dropout sits in nn.Dropout modules (not inside nn.TransformerEncoderLayer,
    whose inference fast path would skip it), so MC dropout reaches it.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.dropout1 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_ratio * dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(mlp_ratio * dim, dim),
            nn.Dropout(dropout),
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, L, dim) → (N, L, dim)."""
        x = self.norm1(tokens)
        tokens = tokens + self.dropout1(self.attention(x, x, x, need_weights=False)[0])
        return tokens + self.mlp(self.norm2(tokens))


def patchify(images: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) → (N, (H/16)(W/16), C·16·16) flattened sub-patches, row-major."""
    n, c, h, w = images.shape
    patches = images.reshape(n, c, h // PATCH, PATCH, w // PATCH, PATCH)
    return patches.permute(0, 2, 4, 1, 3, 5).reshape(n, (h // PATCH) * (w // PATCH), -1)


def tokens_to_map(tokens: torch.Tensor, rows: int, columns: int) -> torch.Tensor:
    """(N, rows·columns, D) row-major tokens → (N, D, rows, columns) feature map."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, rows, columns)


def lift(in_channels: int, out_channels: int, steps: int) -> nn.Sequential:
    """Upsample a token map by 2**steps: transposed 2×2 convolutions of stride 2, each with
    batch norm and ReLU, the first one going to ``out_channels``.
    """
    layers: list[nn.Module] = []
    for k in range(steps):
        layers += [
            nn.ConvTranspose2d(in_channels if k == 0 else out_channels, out_channels, 2, stride=2),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers)


class TransforCNN(nn.Module):
    """Hybrid Transformer-CNN of Quenum et al. 2023, §3.3.

    Encoder: the image is cut into 16×16 sub-patches, each flattened, linearly embedded
    into ``dim`` (64) features and added to its Fourier-feature positional encoding, then
    passed through ``blocks`` (8) transformer encoder blocks.

    Decoder: the output of the last block, reshaped into an (H/16, W/16) map, goes through
    3×3 convolutions (the CNN decoder block, 8×8 from a 128×128 input). The outputs of every
    ``fuse_every``-th (2nd) block are reshaped into maps too: the last one feeds the decoder
    at H/16, the earlier ones, from deep to shallow, are upsampled by transposed convolutions
    to H/8, H/4, H/2 (as UNETR does) and concatenated with the decoder level of that size.
    Each level is upsampled ×2 by a transposed convolution; dropout before each (MC dropout).

    The paper does not give the heads, MLP width, Fourier scale, decoder widths or dropout;
    those options are choices. Its "3×3 convolutions and max-pooling … to obtain 8×8" on the
    last block's 8×8 map is read as 3×3 convolutions only (pooling would go below 8×8).
    """

    encoder_prefixes = ("embed", "blocks")  # ``--freeze encoder``

    def __init__(
        self,
        in_channels: int = 1,
        n_classes: int = 2,
        dim: int = 64,  # Quenum et al. 2023, §3.3: 64-d embeddings
        blocks: int = 8,  # Quenum et al. 2023, §3.3: 8 encoder units
        fuse_every: int = 2,  # Quenum et al. 2023, §3.3: every 2 fused
        heads: int = 4,
        mlp_ratio: int = 4,
        fourier_scale: float = 2.0,
        base: int = 16,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.fused = tuple(range(blocks - 1, -1, -fuse_every))[::-1]  # always the last
        if len(self.fused) > 4:
            raise ValueError(
                f"{len(self.fused)} fused blocks: at most 4 fit the decoder levels H/16 … H/2"
            )
        self.embed = nn.Linear(in_channels * PATCH * PATCH, dim)
        self.positions = FourierPositions(dim, fourier_scale)
        self.blocks = nn.ModuleList(
            EncoderBlock(dim, heads, mlp_ratio, dropout) for _ in range(blocks)
        )
        widths = [base * 2**k for k in reversed(range(4))] + [base]  # H/16 … H/2, H
        self.stem = conv_block(dim, widths[0])
        self.lifts = nn.ModuleList(
            lift(dim, widths[level], level) for level in range(1, len(self.fused))
        )
        self.dropout = nn.Dropout2d(dropout)
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(widths[k], widths[k + 1], 2, stride=2) for k in range(4)
        )
        self.merge = nn.ModuleList(
            conv_block(widths[k] * (2 if k < len(self.fused) else 1), widths[k])
            for k in range(1, 5)
        )
        self.head = nn.Conv2d(widths[-1], n_classes, 1)

    def encode(self, images: torch.Tensor) -> list[torch.Tensor]:
        """(N, C_in, H, W) → the fused blocks' outputs, deepest first, each (N, dim, H/16,
        W/16).
        """
        rows, columns = images.shape[-2] // PATCH, images.shape[-1] // PATCH
        tokens = self.embed(patchify(images)) + self.positions(rows, columns)
        taps = []
        for k, block in enumerate(self.blocks):
            tokens = block(tokens)
            if k in self.fused:
                taps.append(tokens_to_map(tokens, rows, columns))
        return taps[::-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, H, W) float → (N, n_classes, H, W) logits; H, W divisible by 16."""
        check_sides(x, PATCH)
        deepest, *earlier = self.encode(x)
        skips = [up(tap) for up, tap in zip(self.lifts, earlier, strict=True)]
        x = self.stem(deepest)
        for k, (up, merge) in enumerate(zip(self.up, self.merge, strict=True)):
            x = up(self.dropout(x))
            x = merge(torch.cat([x, skips[k]], dim=1) if k < len(skips) else x)
        return self.head(x)
