"""``margin``: Smallest top-two probability margin first."""

from __future__ import annotations

from tomoloop.active.selection import UncertaintyStrategy


class MarginStrategy(UncertaintyStrategy):
    """Smallest top-two probability margin first."""

    name = "margin"
    scoring = "margin"
