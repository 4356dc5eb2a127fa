"""E-Net (Quenum et al. 2023, §3.4; docs/references.md): a weighted ensemble of segmentation
networks. The paper's best mIoU comes from 20% U-Net + 80% TransforCNN, which is the default.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from tomoloop.metrics.semantic import confusion_matrix, scores
from tomoloop.networks.layers import check_sides
from tomoloop.networks.losses import Loss
from tomoloop.networks.transforcnn import TransforCNN
from tomoloop.networks.unet import UNet


def weight_grid(n_members: int, step: float = 0.1) -> list[tuple[float, ...]]:
    """Every weight tuple of ``n_members`` non-negative multiples of ``step`` summing to 1,
    in lexicographic order, e.g. 11 tuples for 2 members at step 0.1.
    """
    ticks = round(1 / step)
    return [
        tuple(count / ticks for count in counts)
        for counts in itertools.product(range(ticks + 1), repeat=n_members)
        if sum(counts) == ticks
    ]


def _normalised(weights: Sequence[float], n_members: int) -> torch.Tensor:
    """(n_members,) float32 weights scaled to sum to 1; ValueError when they cannot be."""
    tensor = torch.as_tensor(weights, dtype=torch.float32)
    if tensor.shape != (n_members,):
        raise ValueError(f"{len(weights)} weights for {n_members} members")
    if (tensor < 0).any() or tensor.sum() <= 0:
        raise ValueError(f"weights {list(weights)} must be non-negative with a positive sum")
    return tensor / tensor.sum()


class ENet(nn.Module):
    """Weighted ensemble of segmentation networks (Quenum et al. 2023, §3.4). The output is the log
    of the weighted mean of the members' softmax probabilities, so its softmax and argmax are the
    ensemble's. Training trains every member on its own logits; ``tune_weights`` searches the
    weights on validation data. The weights are a buffer (in the state dict).
    """

    weights: torch.Tensor

    def __init__(self, members: Sequence[nn.Module], weights: Sequence[float]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.register_buffer("weights", _normalised(weights, len(self.members)))

    @property
    def encoder_prefixes(self) -> tuple[str, ...]:
        """Every member's encoder (``--freeze encoder``)."""
        return tuple(
            f"members.{k}.{prefix}"
            for k, member in enumerate(self.members)
            for prefix in getattr(member, "encoder_prefixes", ())
        )

    @classmethod
    def default(
        cls,
        in_channels: int = 1,
        n_classes: int = 2,
        weights: Sequence[float] = (0.2, 0.8),  # Quenum et al. 2023, §3.4: 20/80
        unet: dict | None = None,
        transforcnn: dict | None = None,
    ) -> ENet:
        """U-Net and TransforCNN, built with their own option dicts (default: defaults)."""
        members = [
            UNet(in_channels, n_classes, **(unet or {})),
            TransforCNN(in_channels, n_classes, **(transforcnn or {})),
        ]
        return cls(members, weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, H, W) float → (N, n_classes, H, W) log ensemble probabilities."""
        check_sides(x)
        log_probs = torch.stack([member(x).log_softmax(dim=1) for member in self.members])
        return torch.logsumexp(log_probs + self.weights.log().view(-1, 1, 1, 1, 1), dim=0)

    def training_loss(
        self,
        images: torch.Tensor,
        target: torch.Tensor,
        weight: torch.Tensor | None,
        loss: Loss,
        progress: float,
    ) -> torch.Tensor:
        """Sum of the members' losses, each on its own logits (``progress`` is unused)."""
        return torch.stack([loss(member(images), target, weight) for member in self.members]).sum()

    @torch.no_grad()
    def member_probs(self, images: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
        """(K, N, C, H, W) softmax probabilities of the K members in eval mode, on the CPU."""
        was_training = self.training
        self.eval()
        device = self.weights.device
        try:
            return torch.cat(
                [
                    torch.stack([m(batch.to(device)).softmax(dim=1).cpu() for m in self.members])
                    for batch in images.split(batch_size)
                ],
                dim=1,
            )
        finally:
            self.train(was_training)

    def tune_weights(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | np.ndarray,
        step: float = 0.1,
        batch_size: int = 16,
    ) -> list[float]:
        """Grid search (``step``, weights summing to 1) for the weights that maximise mIoU
        on validation images (N, C, H, W) with labels (N, H, W) int; ties go to the weights
        nearest the current ones. Sets the weights and returns them.
        """
        probs = self.member_probs(images, batch_size)
        truth = np.asarray(labels)
        current = self.weights.cpu()

        def miou(weights: tuple[float, ...]) -> float:
            predicted = torch.tensordot(torch.tensor(weights), probs, dims=1).argmax(dim=1)
            return scores(confusion_matrix(truth, predicted.numpy(), probs.shape[2])).miou

        def nearness(weights: tuple[float, ...]) -> float:
            return -float((torch.tensor(weights) - current).abs().sum())

        best = max(weight_grid(len(self.members), step), key=lambda w: (miou(w), nearness(w)))
        self.weights.copy_(torch.tensor(best))
        return list(best)
