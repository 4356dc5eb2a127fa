"""``tta``: Highest flip test-time-augmentation variance first."""

from __future__ import annotations

from tomoloop.active.selection import UncertaintyStrategy


class TtaStrategy(UncertaintyStrategy):
    """Highest flip test-time-augmentation variance first."""

    name = "tta"
    scoring = "tta"
