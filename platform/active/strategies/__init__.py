"""The query strategies by name (``--strategy NAME``), one class per file in this package.

A new strategy: a :class:`tomoloop.active.selection.Strategy` subclass in its own file here,
added to :data:`STRATEGIES`.
"""

from __future__ import annotations

from tomoloop.active.selection import SelectionError, Strategy
from tomoloop.active.strategies.bald import BaldStrategy
from tomoloop.active.strategies.coreset import CoresetStrategy
from tomoloop.active.strategies.disagreement import DisagreementStrategy
from tomoloop.active.strategies.ensemble import EnsembleStrategy
from tomoloop.active.strategies.entropy import EntropyStrategy
from tomoloop.active.strategies.foreground_random import ForegroundRandomStrategy
from tomoloop.active.strategies.hybrid import HybridStrategy
from tomoloop.active.strategies.margin import MarginStrategy
from tomoloop.active.strategies.maskal import MaskalStrategy
from tomoloop.active.strategies.random_slices import RandomStrategy
from tomoloop.active.strategies.tta import TtaStrategy

STRATEGIES: dict[str, type[Strategy]] = {
    s.name: s
    for s in (
        RandomStrategy,
        ForegroundRandomStrategy,
        EntropyStrategy,
        MarginStrategy,
        BaldStrategy,
        TtaStrategy,
        EnsembleStrategy,
        DisagreementStrategy,
        MaskalStrategy,
        CoresetStrategy,
        HybridStrategy,
    )
}


def get(name: str) -> Strategy:
    """The strategy registered under ``name``."""
    try:
        return STRATEGIES[name]()
    except KeyError:
        raise SelectionError(f"unknown strategy {name!r}: one of {', '.join(STRATEGIES)}") from None
