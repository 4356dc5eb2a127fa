"""``random``: uniformly random slices, the control arm."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tomoloop.active.selection import C, LeadTimeModel, Limits, Strategy, take_in_order


class RandomStrategy(Strategy):
    """Uniformly random slices: the control arm."""

    name = "random"

    def select(
        self,
        candidates: Sequence[C],
        limits: Limits[C],
        taken: Sequence[C] = (),
        rng: np.random.Generator | None = None,
        lead_time: LeadTimeModel | None = None,
    ) -> list[C]:
        rng = rng or np.random.default_rng()
        order = rng.permutation(len(candidates))
        return take_in_order([candidates[i] for i in order], limits, taken)
