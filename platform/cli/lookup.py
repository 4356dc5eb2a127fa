"""Registry look-ups shared by commands: the registry, its engine, a dataset version by
``NAME[@VERSION]``, an id typed by a user. Each imports the registry (SQLAlchemy) only
when called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tomoloop.errors import TomoloopError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from tomoloop.db.registry import Registry


def open_registry(create: bool = False) -> Registry:
    """The registry; ``create=False`` (commands that only read) creates no file when the
    embedded registry does not exist yet (it reads as empty)."""
    from tomoloop.config import Settings
    from tomoloop.db.registry import Registry

    return Registry.from_url(Settings().registry_url, create)


def registry_engine() -> Engine:
    """An engine on TOMOLOOP_DATABASE_URL (the registry)."""
    from tomoloop.config import Settings
    from tomoloop.db.engine import make_engine

    return make_engine(Settings().registry_url)


def find_dataset(registry: Registry, ref: str):
    """A dataset version from ``NAME`` (latest) or ``NAME@VERSION``."""
    name, _, version = ref.partition("@")
    return registry.dataset(name, int_ref(version) if version else None)


def int_ref(ref: str) -> int:
    """A registry id typed as text; a clear error when it is not a number."""
    if not ref.isdigit():
        raise TomoloopError(f"{ref!r} is not an id: give the number the listing shows")
    return int(ref)
