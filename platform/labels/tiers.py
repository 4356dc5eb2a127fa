"""Label tiers: who made a label. A higher tier supersedes a lower one for training; the
registry stores the tier's number (0 auto … 3 expert)."""

from __future__ import annotations

import enum


class Tier(enum.IntEnum):
    """Who made a label; a higher tier supersedes a lower one for training."""

    AUTO = 0  # from binarization / thresholding
    MODEL = 1  # a model's prediction
    ANNOTATOR = 2  # a person in Label Studio
    EXPERT = 3  # reviewed / approved by a second person

    @property
    def label(self) -> str:
        """The tier's lower-case name (``auto`` … ``expert``), as reports and weights say."""
        return self.name.lower()
