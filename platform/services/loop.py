"""The loop's bookkeeping: its options checked before anything runs, where it starts, and
its progress over rounds (the champion's score against slices labelled).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tomoloop.active.oracle import Behaviour
from tomoloop.active.policy import StopRules, stop_reason
from tomoloop.active.selection import Constraints
from tomoloop.active.strategies import get
from tomoloop.db.entities import DatasetVersion
from tomoloop.db.registry import RegistryError
from tomoloop.services.context import Services
from tomoloop.services.oracle import check_truth
from tomoloop.services.rounds import champion_id, volume_pool
from tomoloop.training.trainer import resolve_device


@dataclass(frozen=True)
class RoundRecord:
    """One finished round of the loop: labels in, the challenger trained on them, and
    whether it became the champion (``champion_mIoU``: the champion's score after it)."""

    round: int
    labelled: int
    reviewed: int
    challenger: int
    dataset_version: int
    promoted: bool
    champion_mIoU: float
    reasons: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "labelled": self.labelled,
            "reviewed": self.reviewed,
            "challenger": self.challenger,
            "dataset_version": self.dataset_version,
            "promoted": self.promoted,
            "champion_mIoU": self.champion_mIoU,
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True)
class LoopProgress:
    """The champion's test score before the first round and after each (``history``),
    slices labelled so far after each (``counts``), and the rounds done."""

    history: tuple[float, ...]
    counts: tuple[int, ...] = (0,)
    rounds: tuple[RoundRecord, ...] = ()

    def stop_reason(self, rules: StopRules) -> str | None:
        """Why the loop stops before its next round (None: it goes on)."""
        return stop_reason(list(self.history), self.counts[-1], rules)

    def after(self, record: RoundRecord) -> LoopProgress:
        """The progress once ``record``'s round is done."""
        return LoopProgress(
            (*self.history, record.champion_mIoU),
            (*self.counts, self.counts[-1] + record.labelled),
            (*self.rounds, record),
        )

    def curve(self) -> list[tuple[int, float]]:
        """(slices labelled, champion score) points of the learning curve."""
        return list(zip(self.counts, self.history, strict=True))

    def to_dict(self, dataset: str, stopped: str, champion: int) -> dict[str, Any]:
        return {
            "dataset": dataset,
            "rounds": [r.to_dict() for r in self.rounds],
            "stopped": stopped,
            "mIoU_history": list(self.history),
            "champion": champion,
        }


def check_loop_options(
    annotator: str,
    reviewer: str | None,
    truth: dict[str, str] | None,
    strategy: str,
    budget: int,
    min_gap: int,
    behaviour: dict[str, Any] | None,
    device: str,
) -> None:
    """Refuse the loop's options before the champion is evaluated: who annotates and
    reviews (the oracle needs ``truth``), and the options of its rounds."""
    if annotator not in ("oracle", "human"):
        raise RegistryError(f"annotator {annotator!r}: use oracle or human")
    if reviewer not in (None, "oracle"):
        raise RegistryError(f"reviewer {reviewer!r}: use oracle or None (people review)")
    if "oracle" in (annotator, reviewer) and not truth:
        raise RegistryError(
            "the oracle annotator and reviewer need the ground-truth label stacks (truth)"
        )
    get(strategy)
    Constraints(budget, None, min_gap)
    Behaviour(**(behaviour or {}))
    resolve_device(device)


def loop_start(
    services: Services, dataset: str, truth: dict[str, str] | None, volumes: Sequence[str] = ()
) -> tuple[DatasetVersion, int]:
    """The dataset's latest version and its champion, the oracle's ``truth`` (when given)
    and the ``volumes`` rounds choose from checked against the version's volumes."""
    version = services.registry.dataset(dataset)
    if truth is not None:
        check_truth(services, version.id, truth)
    volume_pool(services, version, volumes)
    return version, champion_id(services, dataset)
