"""Lazy re-exports for the core subpackages' ``__init__`` files.

A subpackage imports its public names under ``if TYPE_CHECKING:`` in its ``__init__.py`` (and
lists them in ``__all__``); at run time each name is imported from its module on first
access, so importing one module of a domain never imports the whole domain (nor, through it,
other domains), and package ``__init__``s cannot form import cycles.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Callable
from importlib import import_module
from pathlib import Path


def declared_exports(init_file: str) -> dict[str, str]:
    """Each name a package's ``__init__.py`` imports under ``if TYPE_CHECKING:`` (what the
    type checker and the reader see) → the module it comes from: the one list of exports."""
    tree = ast.parse(Path(init_file).read_text(encoding="utf-8"))
    return {
        alias.asname or alias.name: node.module
        for block in tree.body
        if isinstance(block, ast.If)
        and isinstance(block.test, ast.Name)
        and block.test.id == "TYPE_CHECKING"
        for node in block.body
        if isinstance(node, ast.ImportFrom) and node.module
        for alias in node.names
    }


def lazy_exports(
    package: str, init_file: str
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``, whose ``__init__.py`` is ``init_file``:
    the names of its ``TYPE_CHECKING`` imports (:func:`declared_exports`), each imported
    from its module on first access."""
    sources = declared_exports(init_file)

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
