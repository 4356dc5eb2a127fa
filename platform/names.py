"""The one rule for names people give datasets, volumes and models.

A name is 1–200 characters (the registry's column width on every backend), with no
control or invisible format characters, no space at either end, no ``@`` (it separates a
dataset's name from its version: ``nmc@2``) and no ``/`` or ``\\`` (names end up in
Label Studio project titles, Prefect deployment names and folder names).
"""

from __future__ import annotations

import unicodedata

from tomoloop.errors import TomoloopError

NAME_MAX = 200
_FORBIDDEN = "@/\\"
RULE = (
    f"a name is 1–{NAME_MAX} characters, without control characters, '@', '/' or '\\' "
    "and without spaces at either end, e.g. nmc-cathode-2"
)


class NameRuleError(TomoloopError):
    """A dataset, volume or model name breaks the name rule."""


def name_problem(name: str) -> str | None:
    """What is wrong with ``name`` (None: nothing)."""
    if not name.strip():
        return "is empty"
    if len(name) > NAME_MAX:
        return f"is {len(name)} characters long"
    if name != name.strip():
        return "starts or ends with a space"
    if any(unicodedata.category(c).startswith("C") for c in name):
        return "holds a control character"
    used = sorted(set(name) & set(_FORBIDDEN))
    if used:
        return f"holds {used[0]!r}"
    return None


def check_name(name: str, what: str = "name") -> str:
    """``name`` unchanged if it keeps the rule.

    Raises:
        NameRuleError: naming ``what`` (e.g. ``--name``), the problem and the rule.
    """
    problem = name_problem(name)
    if problem is not None:
        shown = name if len(name) <= 40 else f"{name[:37]}..."
        raise NameRuleError(f"{what} {shown!r} {problem}: {RULE}")
    return name
