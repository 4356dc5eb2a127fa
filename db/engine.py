"""Engines and migrations of the registry (SQLite embedded default, PostgreSQL multi-user)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
CONNECT_ATTEMPTS = 5  # waits 0.5 + 1 + 2 + 4 s: a server restart, not an outage
log = logging.getLogger("tomoloop.db")


def _retrying_connect(attempts: int) -> Callable:
    """A ``do_connect`` hook: the dialect's connect, retried with doubling waits."""

    def connect(dialect, _record, cargs, cparams):  # type: ignore[no-untyped-def]
        attempt = 1
        while True:
            try:
                return dialect.connect(*cargs, **cparams)
            except dialect.loaded_dbapi.OperationalError as exc:
                if attempt == attempts:
                    raise
                wait = 0.5 * 2 ** (attempt - 1)
                log.warning(
                    "registry database unreachable (attempt %d of %d: %s); retrying in %.1f s",
                    attempt, attempts, str(exc).splitlines()[0], wait,
                )  # fmt: skip
                time.sleep(wait)
                attempt += 1

    return connect


def make_engine(url: str, connect_attempts: int = CONNECT_ATTEMPTS) -> Engine:
    """An engine for ``url``. SQLite gets WAL, foreign keys and a busy timeout; its folder
    is created. A server database is connected to with ``connect_attempts`` tries, waiting
    0.5, 1, 2 … s between them, so a flow rides out a database restart; then the
    driver's error is raised (the CLI turns it into a message naming what to check).
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        engine = create_engine(url, pool_pre_ping=True)
        event.listen(engine, "do_connect", _retrying_connect(connect_attempts))
        return engine
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the registry schema up to ``revision``."""
    command.upgrade(alembic_config(engine), revision)


def downgrade(engine: Engine, revision: str = "-1") -> None:
    """Migrate the registry schema down to ``revision`` (default: one step)."""
    command.downgrade(alembic_config(engine), revision)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
