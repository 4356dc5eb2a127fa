"""``random``: uniformly random slices, the control arm."""

from __future__ import annotations

import numpy as np

from tomoloop.active.selection import Strategy, take_in_order


class RandomStrategy(Strategy):
    """Uniformly random slices: the control arm."""

    name = "random"

    def select(self, candidates, limits, taken=(), rng=None, lead_time=None):
        rng = rng or np.random.default_rng()
        order = rng.permutation(len(candidates))
        return take_in_order([candidates[i] for i in order], limits, taken)
