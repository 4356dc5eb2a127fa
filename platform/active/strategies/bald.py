"""``bald``: Highest MC-dropout mutual information (BALD) first."""

from __future__ import annotations

from tomoloop.active.selection import UncertaintyStrategy


class BaldStrategy(UncertaintyStrategy):
    """Highest MC-dropout mutual information (BALD) first."""

    name = "bald"
    scoring = "bald"
