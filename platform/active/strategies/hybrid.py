"""``hybrid``: an uncertainty pool, spread over by k-centre."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tomoloop.active.selection import (
    C,
    LeadTimeModel,
    Limits,
    Strategy,
    by_value,
    k_centre,
    take_in_order,
)


class HybridStrategy(Strategy):
    """An uncertainty pool (``pool`` × budget by BALD score, cost-aware with a lead-time
    model), then k-centre inside the pool so the round is not ten views of one feature;
    what the constraints leave of the budget is filled from outside the pool by value.
    """

    name = "hybrid"
    scoring = "bald"
    embed = True
    pool = 4

    def select(
        self,
        candidates: Sequence[C],
        limits: Limits[C],
        taken: Sequence[C] = (),
        rng: np.random.Generator | None = None,
        lead_time: LeadTimeModel | None = None,
    ) -> list[C]:
        ranked = by_value(candidates, lead_time)
        size = self.pool * limits.picks(candidates)
        spread = k_centre(ranked[:size], limits, taken)
        # The constraints can leave the pool short of the budget: fill by value.
        return take_in_order(ranked[size:], limits, taken, spread)
