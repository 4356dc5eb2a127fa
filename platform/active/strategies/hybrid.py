"""``hybrid``: an uncertainty pool, spread over by k-centre."""

from __future__ import annotations

from tomoloop.active.selection import C, Query, Strategy, by_value, k_centre, take_in_order


class HybridStrategy(Strategy):
    """An uncertainty pool (``pool`` × budget by BALD score, cost-aware with a lead-time
    model), then k-centre inside the pool so the round is not ten views of one feature;
    what the constraints leave of the budget is filled from outside the pool by value.
    """

    name = "hybrid"
    scoring = "bald"
    embed = True
    pool = 4

    def choose(self, q: Query[C]) -> list[C]:
        ranked = by_value(q.candidates, q.lead_time)
        size = self.pool * q.limits.picks(q.candidates)
        spread = k_centre(ranked[:size], q.limits, q.taken)
        # The constraints can leave the pool short of the budget: fill by value.
        return take_in_order(ranked[size:], q.limits, q.taken, spread)
