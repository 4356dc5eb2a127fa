"""``coreset``: k-centre on encoder embeddings (Sener & Savarese)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tomoloop.active.selection import C, LeadTimeModel, Limits, Strategy, k_centre


class CoresetStrategy(Strategy):
    """k-centre on encoder embeddings: slices unlike anything labelled so far."""

    name = "coreset"
    embed = True

    def select(
        self,
        candidates: Sequence[C],
        limits: Limits[C],
        taken: Sequence[C] = (),
        rng: np.random.Generator | None = None,
        lead_time: LeadTimeModel | None = None,
    ) -> list[C]:
        return k_centre(candidates, limits, taken)
