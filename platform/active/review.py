"""Which annotator labels a second person reviews, and how far two labels agree.

A label made in Label Studio (tier ``annotator``) goes to the review project, where a
second person approves or corrects it (tier ``expert``), when

- ``model``: the annotator changed much of the model's pre-filled prediction — mean IoU
  between the prediction and the submitted mask below ``min_model_iou``. Either the model
  was badly wrong on this slice or the annotator was; both are worth a second look;
- ``annotators``: two people labelled the same task and their masks agree with a mean
  Dice below ``min_agreement``;
- ``qa``: a random quality-assurance sample at ``qa_rate`` of all labels, drawn from the
  annotation's key so a re-delivered or re-pulled annotation gets the same draw.

Agreement is the per-class Dice (the per-class F1 of Tabassum et al. n.d., App. §II;
docs/references.md) of two class masks of one slice; a class absent from both has none. The
thresholds are tomoloop's defaults, not from the papers. Why review at all: Su et al. 2022
(abstract) show that human bias in the training labels carries through the network into the material
properties computed from its segmentation, and ground truth is usually absent — a second person is
the check.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tomoloop.errors import TomoloopError
from tomoloop.metrics.semantic import confusion_matrix, scores

# kinds of label pairs whose agreement is recorded, as people read them
AGREEMENT_KINDS = {"annotators": "annotator vs annotator", "review": "annotator vs reviewer"}


@dataclass(frozen=True)
class ReviewPolicy:
    """When a label goes to review: thresholds on 0–1 scores and the QA sampling rate."""

    min_model_iou: float = 0.8
    min_agreement: float = 0.8
    qa_rate: float = 0.1

    def __post_init__(self) -> None:
        for name in ("min_model_iou", "min_agreement", "qa_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise TomoloopError(f"review {name} {value} must lie in [0, 1]")


def class_dice(a: np.ndarray, b: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes,) Dice of two (H, W) class-index masks per class; NaN for a class in
    neither mask.
    """
    return scores(confusion_matrix(a, b, n_classes)).dice


def mean_iou(a: np.ndarray, b: np.ndarray, n_classes: int) -> float:
    """Mean IoU over the classes present in either (H, W) class-index mask (1.0 when the
    masks are equal)."""
    return scores(confusion_matrix(a, b, n_classes)).miou


def qa_sampled(key: str, rate: float) -> bool:
    """Whether the label with this key falls in a QA sample of ``rate`` (0–1): the same key
    always gives the same answer, and over many keys the share sampled is ``rate``.
    """
    draw = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64
    return draw < rate


@dataclass(frozen=True)
class Routing:
    """Why a label goes to review (empty: it does not), the model agreement that decided
    it (None: no prediction was shown), and the per-class Dice against each other
    annotator's label of the same task (in the order they were given).
    """

    reasons: tuple[str, ...]
    model_iou: float | None
    agreements: tuple[np.ndarray, ...]


def route(
    mask: np.ndarray,
    n_classes: int,
    key: str,
    policy: ReviewPolicy,
    prediction: np.ndarray | None = None,
    others: Sequence[np.ndarray] = (),
) -> Routing:
    """Decide whether the (H, W) class mask an annotator submitted goes to review.

    ``prediction``: the model's mask pre-filled in the task (None if none was); ``others``:
    other annotators' masks of the same task; ``key``: the label's stable identity (the QA
    draw).
    """
    reasons = []
    model_iou = None
    if prediction is not None:
        model_iou = mean_iou(prediction, mask, n_classes)
        if model_iou < policy.min_model_iou:
            reasons.append("model")
    agreements = tuple(class_dice(other, mask, n_classes) for other in others)
    if any(float(np.nanmean(d)) < policy.min_agreement for d in agreements if np.isfinite(d).any()):
        reasons.append("annotators")
    if qa_sampled(key, policy.qa_rate):
        reasons.append("qa")
    return Routing(tuple(reasons), model_iou, agreements)
