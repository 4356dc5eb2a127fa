"""Retraining and promotion: a challenger's request from the champion, the contest on the
gold test split, and the outcome.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tomoloop.active.policy import Decision
from tomoloop.db.entities import ModelVersion
from tomoloop.db.registry import RegistryError
from tomoloop.services.context import Services


@dataclass(frozen=True)
class ChallengerPlan:
    """What a challenger trains as: architecture, training settings, network options, and
    the parent it fine-tunes (None: from scratch)."""

    arch: str
    config: dict[str, Any] | None
    options: dict[str, Any] | None
    parent: int | None


@dataclass(frozen=True)
class Contest:
    """A challenger, the dataset version it is judged on, the champion it meets, and the
    model name (the dataset's) both carry."""

    challenger: int
    dataset_version_id: int
    champion: int | None
    name: str

    @property
    def rival(self) -> int | None:
        """The champion to evaluate against (None: none, or the challenger itself)."""
        return None if self.champion == self.challenger else self.champion


@dataclass(frozen=True)
class Promotion:
    """The outcome of a contest: promoted or not, why, the champion's score after it
    (None: still no champion), pooled and per volume (``champion_volumes``,
    :func:`volume_scores`), and the challenger's own, pooled and per volume."""

    challenger: int
    champion_before: int | None
    promoted: bool
    reasons: list[str] = field(default_factory=list)
    champion_score: float | None = None
    champion_volumes: dict[str, float | None] = field(default_factory=dict)
    challenger_score: float | None = None
    challenger_volumes: dict[str, float | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "challenger": self.challenger,
            "champion_before": self.champion_before,
            "promoted": self.promoted,
            "reasons": list(self.reasons),
            "champion_score": self.champion_score,
            "champion_volumes": dict(self.champion_volumes),
            "challenger_score": self.challenger_score,
            "challenger_volumes": dict(self.challenger_volumes),
        }


def volume_scores(evaluation: dict[str, Any], metric: str = "mIoU") -> dict[str, float | None]:
    """Volume name → ``metric`` on that volume's slices of the split, from an evaluation
    (the evaluate flow's answer); None for a volume whose slices of the split nobody
    labelled."""
    return {
        name: result[metric] if result["scored"] else None
        for name, result in evaluation.get("volumes", {}).items()
    }


def challenger_plan(
    champion: ModelVersion | None,
    arch: str | None,
    config: dict[str, Any] | None,
    options: dict[str, Any] | None,
    fine_tune: bool,
) -> ChallengerPlan:
    """Architecture, options and training settings default to the champion's; with
    ``fine_tune`` the challenger starts from the champion's weights."""
    request = champion.config if champion is not None else {}
    return ChallengerPlan(
        arch or (champion.architecture if champion is not None else "unet"),
        config if config is not None else request.get("train"),
        options if options is not None else request.get("options"),
        champion.id if fine_tune and champion is not None else None,
    )


def contest_of(services: Services, challenger: int) -> Contest:
    """The contest of model ``challenger``: its training dataset version and its name's
    champion.

    Raises:
        RegistryError: the model has no training dataset version to judge it on.
    """
    model = services.registry.model(challenger)
    champion = services.registry.champion(model.name)
    if model.dataset_version_id is None:
        raise RegistryError(f"model {challenger} has no training dataset version to judge it on")
    rival = None if champion is None else champion.id
    return Contest(challenger, model.dataset_version_id, rival, model.name)


def promotion_outcome(
    contest: Contest,
    new: dict[str, Any],
    old: dict[str, Any] | None,
    decision: Decision,
    metric: str,
) -> Promotion:
    """The outcome of a decided contest (``new``/``old``: the evaluations)."""
    after = new if decision.promote else old
    return Promotion(
        contest.challenger, contest.champion, decision.promote, list(decision.reasons),
        None if after is None else after[metric],
        {} if after is None else volume_scores(after, metric),
        new[metric], volume_scores(new, metric),
    )  # fmt: skip
