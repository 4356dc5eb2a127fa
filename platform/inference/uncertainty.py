"""How unsure a model is, per pixel and per slice — what active learning ranks slices by.

Per-pixel measures take class probabilities with the class axis first: (C, H, W) for one
prediction, (T, C, H, W) for T stochastic passes (MC dropout), ensemble members or
test-time augmentations. They return (H, W) float arrays, higher = more uncertain, in
nats where they are entropies. Aggregations turn a map into one slice score.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

_EPS = 1e-12


def entropy_map(probs: torch.Tensor) -> torch.Tensor:
    """Softmax entropy −Σ_c p log p of (C, H, W) probabilities, on their device and in their
    dtype; 0 (sure) … log C. Class by class into one map (no (C, H, W) temporaries).
    """
    total = torch.zeros_like(probs[0])
    for p in probs:
        total -= p * torch.log(p + _EPS)
    return total


def entropy(probs: np.ndarray) -> np.ndarray:
    """:func:`entropy_map` of (C, H, W) NumPy probabilities, as NumPy."""
    return entropy_map(torch.from_numpy(np.ascontiguousarray(probs))).numpy()


def margin(probs: np.ndarray) -> np.ndarray:
    """1 − (p_top1 − p_top2) of (C, H, W) probabilities; 0 (sure) … 1 (a tie)."""
    top2 = np.partition(probs, -2, axis=0)[-2:]
    return 1.0 - (top2[1] - top2[0])


def mutual_information(samples: np.ndarray) -> np.ndarray:
    """BALD (Houlsby et al.): H[mean_t p_t] − mean_t H[p_t] over (T, C, H, W) samples.

    Disagreement between passes (MC dropout or ensemble members) that the average hides;
    0 when every pass says the same, never above the entropy of the mean.
    """
    mean = samples.mean(axis=0)
    return np.maximum(entropy(mean) - np.mean([entropy(s) for s in samples], axis=0), 0.0)


def tta_variance(samples: np.ndarray) -> np.ndarray:
    """Variance across test-time augmentations (T, C, H, W), averaged over classes."""
    return samples.var(axis=0).mean(axis=0)


# ------------------------------------------------------------------ slice scores


def mean_score(uncertainty: np.ndarray, _probs: np.ndarray | None = None) -> float:
    return float(uncertainty.mean())


def top_percentile_score(
    uncertainty: np.ndarray, _probs: np.ndarray | None = None, percent: float = 5.0
) -> float:
    """Mean of the most uncertain ``percent`` % of pixels: a small unsure region counts."""
    flat = np.sort(uncertainty.ravel())
    keep = max(1, round(flat.size * percent / 100))
    return float(flat[-keep:].mean())


def foreground_weighted_score(uncertainty: np.ndarray, probs: np.ndarray) -> float:
    """Uncertainty weighted by 1 − p(class 0): background the model is sure of counts less."""
    weight = 1.0 - probs[0]
    return float((uncertainty * weight).sum() / max(weight.sum(), _EPS))


AGGREGATIONS: dict[str, Callable[..., float]] = {
    "mean": mean_score,
    "top_percentile": top_percentile_score,
    "foreground_weighted": foreground_weighted_score,
}


# ------------------------------------------------------------------ sampling a model


def enable_dropout(model: nn.Module) -> None:
    """Switch dropout layers to training mode (MC dropout); everything else unchanged."""
    for module in model.modules():
        if isinstance(module, nn.Dropout | nn.Dropout2d | nn.Dropout3d):
            module.train()


FLIPS = ((), (-1,), (-2,), (-2, -1))  # identity, horizontal, vertical, both

