"""The registry's common ground: the transaction every part's methods run in, the
dialect's insert, lookups by id, and the error a request that cannot be met raises.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from tomoloop.db.entities import frozen
from tomoloop.errors import TomoloopError

_CHUNK = 5_000  # rows per bulk statement (stays under SQLite's bound-parameter limit)
_MAX_ID = 2**63 - 1  # the largest id (and version) either backend can store

_LISTINGS = {
    "volume": "volumes",
    "active-learning round": "rounds",
    "dataset version": "datasets",
    "model version": "models",
}


class RegistryError(TomoloopError):
    """A registry request that cannot be met (unknown id, name clash, ...)."""


class Store:
    """Sessions and transactions shared by every part of the registry."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._active: ContextVar[Session | None] = ContextVar(f"registry-{id(self)}", default=None)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed on success, rolled back on any error.

        Inside :meth:`atomic` it is the atomic block's transaction instead.
        """
        active = self._active.get()
        if active is not None:
            yield active
            return
        with self._sessions.begin() as session:
            yield session

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """Run several registry calls as one transaction: all of them, or none."""
        if self._active.get() is not None:
            yield
            return
        with self._sessions.begin() as session:
            token = self._active.set(session)
            try:
                yield
            finally:
                self._active.reset(token)

    def _insert(self, table: Any) -> Any:
        """INSERT with the dialect's ON CONFLICT support (SQLite and PostgreSQL alike)."""
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        return dialect.insert(table)

    def _get(self, table: type, key: int, what: str) -> Any:
        with self.session() as s:
            found = s.get(table, key) if 0 < key <= _MAX_ID else None
        if found is None:
            listing = _LISTINGS.get(what)
            hint = f": `tomoloop registry {listing}` lists them" if listing else ""
            raise RegistryError(f"no {what} with id {key}{hint}")
        return frozen(found)
