"""The loop's rules: when a challenger replaces the champion, and when the loop stops.

A challenger is promoted only when it beats the champion on the same gold split by more
than a margin *and* the microstructure it predicts stays within a tolerance of the gold
labels' — a model can gain mIoU while shifting a thin phase's volume fraction, and the
numbers scientists compute from segmentations are what they publish (Su et al. 2022, abstract:
labelling bias moves them; docs/references.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tomoloop.errors import TomoloopError


@dataclass(frozen=True)
class PromotionRules:
    """``metric`` (a key of an evaluation: ``mIoU``, ``mDSC``) must rise by more than
    ``margin``; every phase's predicted volume fraction must be within
    ``fraction_tolerance`` (absolute, 0–1) of the gold labels' fraction, or no further
    from it than the champion's (:func:`fraction_gate`); the tortuosity of
    the evaluation's transport phase (when measured) within ``tortuosity_tolerance``
    (relative) of the gold labels', and no slice may lose the gold's connection.
    """

    metric: str = "mIoU"
    margin: float = 0.0
    fraction_tolerance: float = 0.05
    tortuosity_tolerance: float = 0.2

    def __post_init__(self) -> None:
        if self.metric not in ("mIoU", "mDSC"):
            raise TomoloopError(f"promotion metric {self.metric!r}: use mIoU or mDSC")
        if self.margin < 0 or self.fraction_tolerance < 0 or self.tortuosity_tolerance < 0:
            raise TomoloopError("promotion margin and tolerances must be ≥ 0")


@dataclass(frozen=True)
class Decision:
    promote: bool
    reasons: tuple[str, ...]


def fraction_gate(evaluation: dict, tolerance: float, champion: dict | None = None) -> list[str]:
    """Why the predicted phase fractions of an evaluation (``as_dict`` form) fail the gate
    (empty when they pass). A phase further than ``tolerance`` from the gold passes when
    the ``champion``'s evaluation on the same gold is at least as far off: a challenger
    that moves a phase towards the gold is not kept out for not getting all the way there.
    """
    failures = []
    for name, values in evaluation["per_class"].items():
        off = _fraction_off(values)
        if abs(off) <= tolerance:
            continue
        before = None if champion is None else _fraction_off(champion["per_class"][name])
        if before is not None and abs(off) <= abs(before):
            continue
        failures.append(
            f"{name} volume fraction {values['volume_fraction']:.3f} is {off:+.3f} from "
            f"the gold {values['volume_fraction_truth']:.3f} (tolerance {tolerance}"
            + ("" if before is None else f"; the champion's is {before:+.3f}")
            + ")"
        )
    return failures


def _fraction_off(values: dict) -> float:
    """A phase's predicted volume fraction minus the gold's (0–1)."""
    return float(values["volume_fraction"] - values["volume_fraction_truth"])


def tortuosity_gate(evaluation: dict, tolerance: float) -> list[str]:
    """Why the predicted tortuosity of an evaluation (``as_dict`` form with a
    ``tortuosity`` entry) fails the gate; empty when it passes or was not measured.
    """
    t = evaluation.get("tortuosity")
    if t is None:
        return []
    failures = []
    if t["lost"]:
        failures.append(
            f"{t['class']} stops connecting the slice's faces along {t['axis']} on "
            f"{t['lost']} slices where the gold connects them"
        )
    if t["slices"]:
        off = t["predicted"] / t["truth"] - 1.0
        if abs(off) > tolerance:
            failures.append(
                f"{t['class']} tortuosity {t['predicted']:.3f} is {off:+.0%} from the gold "
                f"{t['truth']:.3f} (tolerance {tolerance:.0%})"
            )
    return failures


def decide(challenger: dict, champion: dict | None, rules: PromotionRules) -> Decision:
    """Whether the challenger replaces the champion, both evaluated (``as_dict`` form) on
    the same gold split; the reasons say why or why not.
    """
    failures = fraction_gate(challenger, rules.fraction_tolerance, champion)
    failures += tortuosity_gate(challenger, rules.tortuosity_tolerance)
    new = challenger[rules.metric]
    if champion is None:
        reasons = [f"no champion yet; challenger {rules.metric} {new:.4f}"]
    else:
        old = champion[rules.metric]
        reasons = [f"{rules.metric} {new:.4f} vs champion {old:.4f} (margin {rules.margin})"]
        if not new > old + rules.margin:
            failures.append(f"{rules.metric} does not beat the champion by more than the margin")
    return Decision(not failures, tuple(reasons + failures))


@dataclass(frozen=True)
class StopRules:
    """Stop when ``label_budget`` labels are spent (None: no budget; counted in ``unit``,
    slices or labelled pixels), or when the champion's score has not risen by more than
    ``min_gain`` over the last ``patience`` rounds (a flat score stops it).
    """

    label_budget: int | None = None
    patience: int = 2
    min_gain: float = 0.0
    unit: str = "slices"


def stop_reason(scores: Sequence[float], labelled: int, rules: StopRules) -> str | None:
    """Why the loop stops now, given the champion's score after each round so far (the
    score before the first round first) and the labels so far (in ``rules.unit``); None
    to go on.
    """
    if rules.label_budget is not None and labelled >= rules.label_budget:
        return f"label budget spent ({labelled} of {rules.label_budget} {rules.unit})"
    if len(scores) > rules.patience:
        best_before = max(scores[: -rules.patience])
        if max(scores[-rules.patience :]) <= best_before + rules.min_gain:
            return (
                f"no gain of {rules.min_gain} over the last {rules.patience} rounds "
                f"(best {max(scores):.4f})"
            )
    return None
