"""What an active-learning round asks people to label (:class:`RoundUnit`: whole slices or
square regions of them) and how much (:class:`RoundRequest`), checked and turned into the
selection's constraints before anything is scored or written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tomoloop.active.regions import RegionConstraints
from tomoloop.active.selection import Constraints, SelectionError

UNITS = ("slice", "region")


@dataclass(frozen=True)
class RoundUnit:
    """What a round asks people to label: whole slices (``slice``), or square tiles of
    ``region`` pixels a side (``region``) under a budget of ``budget_px`` labelled pixels
    (None: the slice budget's worth of tiles, budget × region²), chosen at least
    ``min_distance`` pixels apart within a slice (None: one region side) and one per slice.
    """

    name: str = "slice"
    region: int = 32
    budget_px: int | None = None
    min_distance: float | None = None

    def __post_init__(self) -> None:
        if self.name not in UNITS:
            raise SelectionError(f"unit {self.name!r}: use one of {', '.join(UNITS)}")
        if self.region < 1:
            raise SelectionError(f"region size {self.region}: a region is at least 1 pixel")

    @property
    def regional(self) -> bool:
        return self.name == "region"

    def region_limits(self, budget: int) -> RegionConstraints:
        """The constraints of a region round whose slice budget is ``budget``."""
        pixels = budget * self.region**2 if self.budget_px is None else self.budget_px
        distance = self.region if self.min_distance is None else self.min_distance
        return RegionConstraints(pixels, distance, one_per_slice=True)


WHOLE_SLICES = RoundUnit()
"""The default unit: whole slices."""


@dataclass(frozen=True)
class RoundRequest:
    """What a round asks for: ``strategy`` chooses ``budget`` slices at least ``min_gap``
    apart (at most ``per_volume`` of a volume), or in ``unit`` region the tiles of its
    :meth:`RoundUnit.region_limits`; only from ``volumes`` (names) when any are named."""

    strategy: str = "bald"
    budget: int = 8
    min_gap: int = 3
    unit: RoundUnit = WHOLE_SLICES
    per_volume: int | None = None
    volumes: tuple[str, ...] = ()

    @classmethod
    def of(
        cls,
        strategy: str,
        budget: int,
        min_gap: int,
        unit: str = "slice",
        region: int = 32,
        budget_px: int | None = None,
        min_distance: float | None = None,
        per_volume: int | None = None,
        volumes: Sequence[str] = (),
    ) -> RoundRequest:
        """From a flow's parameters (see :class:`RoundUnit` for the unit's)."""
        kind = RoundUnit(unit, region, budget_px, min_distance)
        return cls(strategy, budget, min_gap, kind, per_volume, tuple(volumes))

    def limits(self) -> Constraints | RegionConstraints:
        """The round's constraints (refusing bad values with a :class:`SelectionError`)."""
        if self.unit.regional:
            return self.unit.region_limits(self.budget)
        return Constraints(self.budget, self.per_volume, self.min_gap)

    @property
    def recorded_budget(self) -> int:
        """The budget the registry records: slices, or pixels for a region round."""
        limits = self.limits()
        return limits.budget_px if isinstance(limits, RegionConstraints) else self.budget
