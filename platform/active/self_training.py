"""Self-training: the champion's confident predictions as labels of tier ``model``.

Where the champion is sure of a pixel of the target volume nobody labelled, its prediction
can teach the next model too (pseudo-labels). Per class, only the most confident pixels
predicted as that class count (class-balanced thresholds, as in Zou et al.'s CBST: a
single threshold would keep the easy, common phase and drop the thin one), never below a
floor; every other pixel stays :data:`tomoloop.labels.IGNORE`. Such labels train with the
low weight of the ``model`` tier.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tomoloop.errors import TomoloopError
from tomoloop.labels.phases import IGNORE
from tomoloop.training.data import DEFAULT_TIER_WEIGHTS


@dataclass(frozen=True)
class SelfTraining:
    """Whether pseudo-labels are used (``enabled``), the fraction ``keep`` (0–1] of the
    pixels predicted as each class that become labels (the most confident ones), the
    confidence ``floor`` (0–1) no pseudo-label falls below, and their training ``weight``
    (default: the ``model`` tier's).
    """

    enabled: bool = False
    keep: float = 0.5
    floor: float = 0.9
    weight: float = DEFAULT_TIER_WEIGHTS["model"]

    def __post_init__(self) -> None:
        if not 0 < self.keep <= 1:
            raise TomoloopError(f"self-training keep {self.keep} must be in (0, 1]")
        if not 0 <= self.floor <= 1:
            raise TomoloopError(f"self-training floor {self.floor} must be in [0, 1]")
        if self.weight < 0:
            raise TomoloopError(f"self-training weight {self.weight} must be ≥ 0")


def class_thresholds(probs: np.ndarray, keep: float, floor: float) -> np.ndarray:
    """(C,) confidence thresholds from (C, ...) class probabilities: for each class the
    (1 − ``keep``) quantile of the top probability over the pixels predicted as that
    class, at least ``floor``; above 1 (nothing kept) for a class never predicted.
    """
    predicted, confidence = probs.argmax(axis=0), probs.max(axis=0)
    out = np.full(probs.shape[0], np.inf)
    for c in range(probs.shape[0]):
        mine = confidence[predicted == c]
        if mine.size:
            out[c] = max(float(np.quantile(mine, 1.0 - keep)), floor)
    return out


def confident_labels(
    probs: np.ndarray, thresholds: np.ndarray, labelled: np.ndarray | None = None
) -> np.ndarray:
    """The sparse pseudo-label of one slice: (C, H, W) probabilities and (C,) thresholds →
    (H, W) uint8, the predicted class where its probability reaches the class's threshold
    and the pixel is not ``labelled`` ((H, W) bool, e.g. painted by a person),
    :data:`IGNORE` elsewhere.
    """
    if probs.shape[0] > IGNORE:
        raise TomoloopError(f"{probs.shape[0]} classes: a sparse label holds at most {IGNORE}")
    predicted, confidence = probs.argmax(axis=0), probs.max(axis=0)
    sure = confidence >= np.asarray(thresholds)[predicted]
    if labelled is not None:
        sure &= ~labelled
    return np.where(sure, predicted, IGNORE).astype(np.uint8)
