"""``ensemble``: Highest disagreement of ensemble members first."""

from __future__ import annotations

from tomoloop.active.selection import UncertaintyStrategy


class EnsembleStrategy(UncertaintyStrategy):
    """Highest disagreement of ensemble members first."""

    name = "ensemble"
    scoring = "ensemble"
