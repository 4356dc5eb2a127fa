"""``foreground_random``: random slices weighted by their foreground, the second control arm."""

from __future__ import annotations

import numpy as np

from tomoloop.active.selection import C, Query, Strategy, take_in_order


class ForegroundRandomStrategy(Strategy):
    """Random slices weighted by their foreground fraction (slices of nothing but the first
    phase are never drawn while others remain): the second control arm.
    """

    name = "foreground_random"

    def choose(self, q: Query[C]) -> list[C]:
        weights = np.array([max(c.foreground, 0.0) for c in q.candidates])
        # Weighted sampling without replacement (Efraimidis & Spirakis): keys u^(1/w).
        keys = np.where(
            weights > 0, q.rng.random(len(q.candidates)) ** (1 / np.maximum(weights, 1e-12)), -1
        )
        order = np.argsort(-keys, kind="stable")
        return take_in_order([q.candidates[i] for i in order], q.limits, q.taken)
