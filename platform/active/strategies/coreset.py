"""``coreset``: k-centre on encoder embeddings (Sener & Savarese)."""

from __future__ import annotations

from tomoloop.active.selection import Strategy, k_centre


class CoresetStrategy(Strategy):
    """k-centre on encoder embeddings: slices unlike anything labelled so far."""

    name = "coreset"
    embed = True

    def select(self, candidates, limits, taken=(), rng=None, lead_time=None):
        return k_centre(candidates, limits, taken)
