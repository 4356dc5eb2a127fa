"""``foreground_random``: random slices weighted by their foreground, the second control arm."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tomoloop.active.selection import C, LeadTimeModel, Limits, Strategy, take_in_order


class ForegroundRandomStrategy(Strategy):
    """Random slices weighted by their foreground fraction (slices of nothing but the first
    phase are never drawn while others remain): the second control arm.
    """

    name = "foreground_random"

    def select(
        self,
        candidates: Sequence[C],
        limits: Limits[C],
        taken: Sequence[C] = (),
        rng: np.random.Generator | None = None,
        lead_time: LeadTimeModel | None = None,
    ) -> list[C]:
        rng = rng or np.random.default_rng()
        weights = np.array([max(c.foreground, 0.0) for c in candidates])
        # Weighted sampling without replacement (Efraimidis & Spirakis): keys u^(1/w).
        keys = np.where(
            weights > 0, rng.random(len(candidates)) ** (1 / np.maximum(weights, 1e-12)), -1
        )
        order = np.argsort(-keys, kind="stable")
        return take_in_order([candidates[i] for i in order], limits, taken)
