"""``random``: uniformly random slices, the control arm."""

from __future__ import annotations

from tomoloop.active.selection import C, Query, Strategy, take_in_order


class RandomStrategy(Strategy):
    """Uniformly random slices: the control arm."""

    name = "random"

    def choose(self, q: Query[C]) -> list[C]:
        order = q.rng.permutation(len(q.candidates))
        return take_in_order([q.candidates[i] for i in order], q.limits, q.taken)
