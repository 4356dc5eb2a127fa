"""Lazy re-exports for the core subpackages' ``__init__`` files.

A subpackage lists its public names with the module defining each; a name is imported on
first access, so importing one module of a domain never imports the whole domain (nor, through
it, other domains), and package ``__init__``s cannot form import cycles.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from importlib import import_module


def lazy_exports(
    package: str, sources: Mapping[str, str]
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``; ``sources`` maps each name to its module."""

    def getattr_(name: str) -> object:
        module = sources.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    def dir_() -> list[str]:
        return sorted(set(sources) | set(vars(sys.modules[package])))

    return getattr_, dir_
