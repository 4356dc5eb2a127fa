"""The loop's bookkeeping: its options checked before anything runs, where it starts, and
its progress over rounds (the champion's score against slices labelled).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tomoloop.active.oracle import Behaviour
from tomoloop.active.policy import StopRules, stop_reason
from tomoloop.active.requests import RoundRequest
from tomoloop.db.entities import DatasetVersion
from tomoloop.db.registry import RegistryError
from tomoloop.services.context import Services
from tomoloop.services.oracle import check_truth
from tomoloop.services.rounds import champion_id, strategy_for, volume_ids
from tomoloop.training.trainer import resolve_device


@dataclass(frozen=True)
class RoundRecord:
    """One finished round of the loop: labels in (``labelled`` items, ``labelled_px``
    pixels), the challenger trained on them, and whether it became the champion
    (``champion_mIoU``: the champion's score after it that the loop follows,
    :func:`followed_score`; ``challenger_mIoU``: the challenger's own, followed the same
    way — what the round's labels taught, promoted or not)."""

    round: int
    labelled: int
    reviewed: int
    challenger: int
    dataset_version: int
    promoted: bool
    champion_mIoU: float
    reasons: list[str]
    labelled_px: int = 0
    challenger_mIoU: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "labelled": self.labelled,
            "labelled_px": self.labelled_px,
            "reviewed": self.reviewed,
            "challenger": self.challenger,
            "dataset_version": self.dataset_version,
            "promoted": self.promoted,
            "champion_mIoU": self.champion_mIoU,
            "challenger_mIoU": self.challenger_mIoU,
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True)
class LoopProgress:
    """The champion's test score before the first round and after each (``history``),
    labels so far after each (``counts``: slices, or labelled pixels when ``regional``),
    and the rounds done."""

    history: tuple[float, ...]
    counts: tuple[int, ...] = (0,)
    rounds: tuple[RoundRecord, ...] = ()
    regional: bool = False

    @property
    def unit(self) -> str:
        """What :attr:`counts` count."""
        return "pixels" if self.regional else "slices"

    def stop_reason(self, rules: StopRules) -> str | None:
        """Why the loop stops before its next round (None: it goes on)."""
        return stop_reason(list(self.history), self.counts[-1], rules)

    def after(self, record: RoundRecord) -> LoopProgress:
        """The progress once ``record``'s round is done."""
        labelled = record.labelled_px if self.regional else record.labelled
        return LoopProgress(
            (*self.history, record.champion_mIoU),
            (*self.counts, self.counts[-1] + labelled),
            (*self.rounds, record),
            self.regional,
        )

    def curve(self) -> list[tuple[int, float]]:
        """(labels so far in :attr:`unit`, champion score) points of the learning curve."""
        return list(zip(self.counts, self.history, strict=True))

    def to_dict(self, dataset: str, stopped: str, champion: int) -> dict[str, Any]:
        return {
            "dataset": dataset,
            "rounds": [r.to_dict() for r in self.rounds],
            "stopped": stopped,
            "mIoU_history": list(self.history),
            "curve": {"unit": self.unit, "points": [list(p) for p in self.curve()]},
            "champion": champion,
        }


def followed_score(
    pooled: float, per_volume: Mapping[str, float | None], volumes: Sequence[str] = ()
) -> float:
    """The score the loop follows (its curve and stop rules): the champion's test mIoU over
    every volume, or with ``volumes`` named (the new scan), the mean of their own test mIoU
    (``per_volume``: :func:`tomoloop.services.promotion.volume_scores`).

    Raises:
        RegistryError: no named volume has labelled test slices to be scored on.
    """
    if not volumes:
        return pooled
    scored = [s for v in volumes if (s := per_volume.get(v)) is not None]
    if not scored:
        raise RegistryError(
            f"the loop follows volume(s) {', '.join(volumes)}, but none has labelled test "
            "slices: add gold labels for their val and test slices first (`tomoloop gold "
            "LABELS --dataset DATASET --volume VOLUME`)"
        )
    return sum(scored) / len(scored)


def check_loop_options(
    annotator: str,
    reviewer: str | None,
    truth: dict[str, str] | None,
    asked: RoundRequest,
    behaviour: dict[str, Any] | None,
    device: str,
) -> bool:
    """Refuse the loop's options before the champion is evaluated: who annotates and
    reviews (the oracle needs ``truth``), and the options of its rounds. Returns whether
    the oracle answers (annotates or reviews)."""
    if annotator not in ("oracle", "human"):
        raise RegistryError(f"annotator {annotator!r}: use oracle or human")
    if reviewer not in (None, "oracle"):
        raise RegistryError(f"reviewer {reviewer!r}: use oracle or None (people review)")
    if "oracle" in (annotator, reviewer) and not truth:
        raise RegistryError(
            "the oracle annotator and reviewer need the ground-truth label stacks (truth)"
        )
    strategy_for(asked.strategy, None, asked.unit)
    asked.limits()
    Behaviour(**(behaviour or {}))
    resolve_device(device)
    return "oracle" in (annotator, reviewer)


def loop_start(
    services: Services, dataset: str, truth: dict[str, str] | None, volumes: Sequence[str] = ()
) -> tuple[DatasetVersion, int]:
    """The dataset's latest version and its champion, the oracle's ``truth`` (when given)
    and the ``volumes`` rounds choose from checked against the version's volumes."""
    version = services.registry.dataset(dataset)
    if truth is not None:
        check_truth(services, version.id, truth)
    volume_ids(services, version, volumes)
    return version, champion_id(services, dataset)
