"""``disagreement``: where an instance model and the semantic model disagree most."""

from __future__ import annotations

from tomoloop.active.selection import UncertaintyStrategy


class DisagreementStrategy(UncertaintyStrategy):
    """Slices where a Mask R-CNN's particles and the semantic model's particle phases
    disagree most (1 − Dice) first: two kinds of model wrong in different ways point at
    the slices worth a person's time.
    """

    name = "disagreement"
    instances = "disagreement"
