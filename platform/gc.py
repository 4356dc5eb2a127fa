"""Which files of the artifact store may go (``tomoloop db gc``).

A run killed after it stored an artifact but before its registry transaction committed
leaves a file no row refers to; a put killed before its rename leaves a ``.tmp-`` file.
Both are taken once untouched for longer than a grace period, so a run storing now (its
commit still to come) keeps its files. Files the store does not write are never taken.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from tomoloop.adapters.artifacts import StoredFile
from tomoloop.errors import TomoloopError
from tomoloop.paths import store_file_kind

_UNIT_S = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str, flag: str) -> float:
    """``"90"`` / ``"90s"`` → 90.0, ``"30m"`` → 1800.0, ``"1h"``, ``"2d"``: seconds ≥ 0.

    Raises:
        TomoloopError: naming ``flag`` and the forms it takes.
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([smhd]?)\s*", text.lower())
    if match is None:
        raise TomoloopError(
            f"{flag} {text!r}: give a duration such as 3600, 90s, 30m, 1h or 2d"
        )
    return float(match[1]) * _UNIT_S[match[2]]


def collectable(
    files: Iterable[StoredFile], referenced: set[str], now: float, grace_s: float
) -> list[StoredFile]:
    """The files to remove: artifacts whose key is not in ``referenced`` and temporary
    leftovers, last modified more than ``grace_s`` seconds before ``now`` (seconds since
    the epoch), in the order given."""
    return [
        f
        for f in files
        if now - f.mtime > grace_s
        and (
            store_file_kind(f.key) == "temporary"
            or (store_file_kind(f.key) == "artifact" and f.key not in referenced)
        )
    ]


def check_registry_matches(referenced: set[str], chosen: list[StoredFile]) -> None:
    """Refuse to remove artifacts when the registry refers to none at all: that is a
    registry other than the store's (a wrong or unset TOMOLOOP_DATABASE_URL), and removing
    would empty a store another registry uses. Temporary leftovers may always go.

    Raises:
        TomoloopError: naming the settings to check.
    """
    artifacts = sum(store_file_kind(f.key) == "artifact" for f in chosen)
    if not referenced and artifacts:
        raise TomoloopError(
            f"the registry refers to no artifact, yet {artifacts} in the store would be "
            "removed: check that TOMOLOOP_DATABASE_URL is the registry of "
            "TOMOLOOP_ARTIFACTS_URL (nothing was removed)"
        )
