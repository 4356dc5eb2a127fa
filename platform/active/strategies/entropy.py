"""``entropy``: Highest mean predictive entropy first."""

from __future__ import annotations

from tomoloop.active.selection import UncertaintyStrategy


class EntropyStrategy(UncertaintyStrategy):
    """Highest mean predictive entropy first."""

    name = "entropy"
    scoring = "entropy"
