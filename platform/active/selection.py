"""Query strategies: which unlabelled slices an expert should label next.

A strategy is a small class with a name (one file each in :mod:`tomoloop.active.strategies`,
which registers them by name as MONAI Label's ``monailabel/tasks/activelearning`` does) that
picks from :class:`Candidate` slices under one set of :class:`Constraints`: a budget per
round and per volume, a minimum index gap between chosen slices of the same volume and axis
(neighbouring slices are nearly identical — labelling both wastes an expert's time), and
never a slice that is already labelled or waiting in an open round (the caller leaves those
out of the candidates and passes them as ``taken``).

Uncertainty strategies rank by the slice's score; with a :class:`LeadTimeModel` fitted on
the Label Studio lead times seen so far they rank by score per expected second of an
expert's time instead (cost-aware). Core-set picks k centres on encoder embeddings
(Sener & Savarese's greedy k-centre); hybrid takes an uncertainty pool and then spreads the
budget over it by k-centre.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

import numpy as np

from tomoloop.errors import TomoloopError

if TYPE_CHECKING:
    from tomoloop.active.scoring import SliceFeatures


class SelectionError(TomoloopError):
    """A strategy or constraint that cannot be used as asked."""


class Ranked(Protocol):
    """What a strategy reads of a candidate, a slice (:class:`Candidate`) or a region
    (:class:`tomoloop.active.regions.RegionCandidate`): the ``slice_id`` it lies on (ties
    are broken by it), its ``volume``, ``score``, ``foreground`` and ``boundary`` fractions
    (0–1) and encoder ``embedding``.
    """

    @property
    def slice_id(self) -> int: ...

    @property
    def volume(self) -> int: ...

    @property
    def score(self) -> float: ...

    @property
    def foreground(self) -> float: ...

    @property
    def boundary(self) -> float: ...

    @property
    def embedding(self) -> tuple[float, ...] | None: ...


C = TypeVar("C", bound=Ranked)
C_contra = TypeVar("C_contra", bound=Ranked, contravariant=True)


@dataclass(frozen=True)
class Candidate:
    """A slice that could be labelled next.

    ``score``: uncertainty (higher = more informative); ``foreground``: fraction (0–1) of
    its pixels the model puts outside the first phase; ``boundary``: fraction (0–1) of its
    pixels on a predicted phase boundary (what an annotator has to trace);
    ``embedding``: the encoder's pooled features (for core-set), or None.
    """

    slice_id: int
    volume: int
    axis: str
    index: int
    score: float = 0.0
    foreground: float = 1.0
    boundary: float = 0.0
    embedding: tuple[float, ...] | None = None

    @classmethod
    def of(
        cls, slice_id: int, volume: int, axis: str, index: int, features: SliceFeatures
    ) -> Candidate:
        """A candidate with a slice's scored features."""
        f = features
        return cls(slice_id, volume, axis, index, f.score, f.foreground, f.boundary, f.embedding)


@dataclass(frozen=True)
class Constraints:
    """``budget`` slices per round, at most ``per_volume`` from one volume (None: no
    limit), and chosen slices of one volume and axis at least ``min_gap`` indices apart.
    """

    budget: int
    per_volume: int | None = None
    min_gap: int = 0

    def __post_init__(self) -> None:
        if self.budget < 1:
            raise SelectionError(f"budget {self.budget}: a round needs at least one slice")
        if self.per_volume is not None and self.per_volume < 1:
            raise SelectionError(f"per-volume budget {self.per_volume} must be at least 1")
        if self.min_gap < 0:
            raise SelectionError(f"minimum gap {self.min_gap} must be ≥ 0")

    def admits(self, c: Candidate, chosen: Sequence[Candidate], taken: Sequence[Candidate]) -> bool:
        """Whether ``c`` may join ``chosen`` (this round) given ``taken`` (labelled or
        pending slices, which also hold their neighbours off).
        """
        quota = self.per_volume
        if quota is not None and sum(o.volume == c.volume for o in chosen) >= quota:
            return False
        return _gap_ok(c, chosen, self.min_gap) and _gap_ok(c, taken, self.min_gap)

    def full(self, chosen: Sequence[Candidate]) -> bool:
        """Whether ``chosen`` spends the whole budget."""
        return len(chosen) >= self.budget

    def picks(self, _candidates: Sequence[Candidate]) -> int:
        """How many candidates a round takes at most (sizes an uncertainty pool)."""
        return self.budget


class Limits(Protocol[C_contra]):
    """What a round may take of candidates of one kind: :class:`Constraints` (slices) or
    :class:`tomoloop.active.regions.RegionConstraints` (regions under a pixel budget).
    """

    def admits(
        self, c: C_contra, chosen: Sequence[C_contra], taken: Sequence[C_contra]
    ) -> bool: ...

    def full(self, chosen: Sequence[C_contra]) -> bool: ...

    def picks(self, candidates: Sequence[C_contra]) -> int: ...


@dataclass(frozen=True)
class LeadTimeModel:
    """Expected annotation seconds of a slice: ``intercept + slope × boundary``, a least-
    squares line through the lead times seen so far (a flat mean when they cannot fit a
    line), never below ``floor`` seconds.
    """

    intercept: float
    slope: float = 0.0
    floor: float = 1.0

    @classmethod
    def fit(cls, boundary: Sequence[float], seconds: Sequence[float]) -> LeadTimeModel | None:
        """From ``(boundary fraction, lead time in s)`` pairs; None without any pair."""
        x, y = np.asarray(boundary, float), np.asarray(seconds, float)
        if y.size == 0:
            return None
        if y.size < 2 or np.ptp(x) == 0:
            return cls(float(y.mean()))
        slope, intercept = np.polyfit(x, y, 1)
        return cls(float(intercept), float(slope))

    def seconds(self, c: Ranked) -> float:
        return max(self.intercept + self.slope * c.boundary, self.floor)


def _gap_ok(c: Candidate, chosen: Sequence[Candidate], min_gap: int) -> bool:
    return all(
        c.volume != o.volume or c.axis != o.axis or abs(c.index - o.index) >= min_gap
        for o in chosen
    )


def admissible(c: C, chosen: Sequence[C], taken: Sequence[C], limits: Limits[C]) -> bool:
    """Whether ``c`` may join ``chosen`` (this round) given ``taken`` (labelled or pending
    slices or regions, which also hold their neighbours off).
    """
    return limits.admits(c, chosen, taken)


def take_in_order(
    ordered: Sequence[C],
    limits: Limits[C],
    taken: Sequence[C] = (),
    chosen: Sequence[C] = (),
) -> list[C]:
    """``chosen`` followed by the first admissible candidates of a preference order, up to
    the budget.
    """
    chosen = list(chosen)
    for c in ordered:
        if limits.full(chosen):
            break
        if admissible(c, chosen, taken, limits):
            chosen.append(c)
    return chosen


def _embeddings(candidates: Sequence[Ranked], what: str) -> np.ndarray:
    if any(c.embedding is None for c in candidates):
        raise SelectionError(
            f"{what} needs encoder embeddings of every slice: score with embeddings "
            "(ScoreOptions(embed=True))"
        )
    return np.asarray([c.embedding for c in candidates], dtype=np.float64).reshape(
        len(candidates), -1
    )


def k_centre(candidates: Sequence[C], limits: Limits[C], taken: Sequence[C] = ()) -> list[C]:
    """Greedy k-centre: repeatedly the admissible candidate farthest (Euclidean, in
    embedding space) from everything chosen or already labelled; the most uncertain first
    when nothing is labelled yet.
    """
    if not candidates:
        return []
    points = _embeddings(candidates, "core-set selection")
    nearest = np.full(len(candidates), np.inf)
    if taken:
        anchors = _embeddings(taken, "core-set selection")
        nearest = np.min(np.linalg.norm(points[:, None] - anchors[None], axis=-1), axis=1)
    chosen: list[C] = []
    open_ = np.ones(len(candidates), dtype=bool)
    while not limits.full(chosen) and open_.any():
        key = np.array([c.score for c in candidates]) if np.isinf(nearest).all() else nearest
        for i in np.argsort(-np.where(open_, key, -np.inf), kind="stable"):
            if not open_[i]:
                break
            open_[i] = False
            if admissible(candidates[i], chosen, taken, limits):
                chosen.append(candidates[i])
                nearest = np.minimum(nearest, np.linalg.norm(points - points[i], axis=1))
                break
    return chosen


@dataclass(frozen=True)
class Query(Generic[C]):
    """One round's question to a strategy: which of ``candidates`` to label, under
    ``limits``, given ``taken`` (labelled or pending units, which also hold their neighbours
    off), drawing from ``rng``, pricing by ``lead_time`` when known.
    """

    candidates: Sequence[C]
    limits: Limits[C]
    taken: Sequence[C]
    rng: np.random.Generator
    lead_time: LeadTimeModel | None


class Strategy:
    """Base of the query strategies: ``select(candidates, limits, taken, rng, lead_time)``
    asks the strategy's own rule, :meth:`choose`, with a :class:`Query`.

    ``scoring`` names the scoring method (:data:`tomoloop.active.METHODS`) whose scores the
    strategy ranks by; ``embed`` says whether it needs encoder embeddings; ``instances``
    which score of a registered Mask R-CNN it ranks by instead (None: none):
    ``"disagreement"`` (its particles against the semantic model's) or ``"flips"`` (its
    own detection confidence and flip-TTA disagreement).
    """

    name = ""
    scoring = "entropy"
    embed = False
    instances: str | None = None

    def select(
        self,
        candidates: Sequence[C],
        limits: Limits[C],
        taken: Sequence[C] = (),
        rng: np.random.Generator | None = None,
        lead_time: LeadTimeModel | None = None,
    ) -> list[C]:
        """The candidates (slices or regions) to label this round, in the strategy's order
        of preference; ``rng`` defaults to a fresh unseeded generator.
        """
        query = Query(candidates, limits, taken, rng or np.random.default_rng(), lead_time)
        return self.choose(query)

    def choose(self, q: Query[C]) -> list[C]:
        """The strategy's rule: what :meth:`select` returns."""
        raise NotImplementedError


def _value(lead_time: LeadTimeModel | None) -> Callable[[Ranked], float]:
    """Score, or score per expected second of annotation when lead times are known."""
    if lead_time is None:
        return lambda c: c.score
    return lambda c: c.score / lead_time.seconds(c)


def by_value(candidates: Sequence[C], lead_time: LeadTimeModel | None) -> list[C]:
    """Candidates by value, best first (ties by slice id)."""
    value = _value(lead_time)
    return sorted(candidates, key=lambda c: (-value(c), c.slice_id))


class UncertaintyStrategy(Strategy):
    """The highest scores first (cost-aware with a lead-time model)."""

    def choose(self, q: Query[C]) -> list[C]:
        return take_in_order(by_value(q.candidates, q.lead_time), q.limits, q.taken)
