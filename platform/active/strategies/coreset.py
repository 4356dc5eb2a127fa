"""``coreset``: k-centre on encoder embeddings (Sener & Savarese)."""

from __future__ import annotations

from tomoloop.active.selection import C, Query, Strategy, k_centre


class CoresetStrategy(Strategy):
    """k-centre on encoder embeddings: slices unlike anything labelled so far."""

    name = "coreset"
    embed = True

    def choose(self, q: Query[C]) -> list[C]:
        return k_centre(q.candidates, q.limits, q.taken)
