"""Engines and migrations of the registry (SQLite embedded default, PostgreSQL multi-user)."""

from __future__ import annotations

import fcntl
import logging
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util.exc import CommandError
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, OperationalError
from sqlalchemy.pool import StaticPool

from tomoloop.errors import RegistryDatabaseError

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


BACKENDS = ("sqlite", "postgresql")
URL_EXAMPLES = "sqlite:////abs/path/registry.sqlite or postgresql+psycopg://user@host:5432/db"


def _hide_credentials(text: str) -> str:
    """``text`` with whatever sits between ``//`` and ``@`` (user, password) masked."""
    return re.sub(r"//[^/@]*@", "//***@", text)


def parse_registry_url(url: str) -> URL:
    """The parsed registry URL.

    Raises:
        RegistryDatabaseError: not a URL, or a backend other than SQLite / PostgreSQL.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise RegistryDatabaseError(
            f"TOMOLOOP_DATABASE_URL {_hide_credentials(url)!r} is not a database URL: "
            f"use {URL_EXAMPLES}"
        ) from None
    if parsed.get_backend_name() not in BACKENDS:
        raise RegistryDatabaseError(
            f"TOMOLOOP_DATABASE_URL: {parsed.get_backend_name()!r} registries are not "
            f"supported: use {URL_EXAMPLES}"
        )
    return parsed


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite registry URL (None: in memory, or not SQLite)."""
    parsed = parse_registry_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def check_registry_place(path: Path) -> None:
    """Refuse a SQLite registry file that could never be created: a file stands where a
    folder of its path should be (a ``TOMOLOOP_HOME`` that names a file).

    Raises:
        RegistryDatabaseError: naming the file in the way.
    """
    existing = next(p for p in (path, *path.parents) if p.exists())
    if existing == path and path.is_dir():
        raise _unusable(path, "it is a folder")
    if existing != path and not existing.is_dir():
        raise _unusable(path, f"{existing} is a file, not a folder")


def _unusable(path: Path, why: str) -> RegistryDatabaseError:
    return RegistryDatabaseError(
        f"the registry {path} cannot be used: {why}; set TOMOLOOP_HOME (or "
        "TOMOLOOP_DATABASE_URL) to a place you can write"
    )


def _create_engine(url: URL, **kwargs: object) -> Engine:
    """``create_engine``; a driver that is not installed is a one-line error."""
    try:
        return create_engine(url, **kwargs)
    except ModuleNotFoundError as exc:
        raise RegistryDatabaseError(
            f"TOMOLOOP_DATABASE_URL: the driver of {url.drivername!r} is not installed "
            f"({exc}): use {URL_EXAMPLES}"
        ) from None


def make_engine(url: str, connect_attempts: int = CONNECT_ATTEMPTS) -> Engine:
    """An engine for ``url``. SQLite gets WAL, foreign keys and a busy timeout; its folder
    is created. A server database is connected to with ``connect_attempts`` tries, waiting
    0.5, 1, 2 … s between them, so a flow rides out a database restart; then the
    driver's error is raised (the CLI turns it into a message naming what to check).

    Raises:
        RegistryDatabaseError: ``url`` is not a URL of a backend tomoloop can use.
    """
    parsed = parse_registry_url(url)
    if parsed.get_backend_name() != "sqlite":
        engine = _create_engine(parsed, pool_pre_ping=True)
        event.listen(engine, "do_connect", _retrying_connect(connect_attempts))
        return engine
    path = sqlite_file(url)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _unusable(path, f"{exc.strerror} ({exc.filename})") from None
        engine = _create_engine(parsed, connect_args={"timeout": 30})
    else:  # in memory: one connection, or each would see its own empty database
        engine = _create_engine(
            parsed, poolclass=StaticPool, connect_args={"check_same_thread": False}
        )

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine


def alembic_config(engine: Engine | None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


@cache
def revisions() -> tuple[str, ...]:
    """The schema revisions this tomoloop knows, oldest first (the last is the head)."""
    script = ScriptDirectory.from_config(alembic_config(None))
    return tuple(reversed([r.revision for r in script.walk_revisions()]))


@contextmanager
def _migration_errors(revision: str) -> Iterator[None]:
    """An unknown target revision as a one-line error naming the known ones."""
    try:
        yield
    except (CommandError, RevisionError) as exc:
        if "revision" not in str(exc).lower():
            raise
        raise RegistryDatabaseError(
            f"--revision {revision!r}: not a registry revision ({exc}); use head, base, a "
            f"relative step like -1, or one of {', '.join(revisions())}"
        ) from None


def check_revision(revision: str) -> None:
    """Refuse a migration target that names no revision, before any database is touched:
    ``head``, ``base``, a relative step (``-1``, ``+2``) or a known revision id."""
    if revision in ("head", "heads", "base") or re.fullmatch(r"[+-]\d+", revision):
        return
    with _migration_errors(revision):
        ScriptDirectory.from_config(alembic_config(None)).get_revision(revision)


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the registry schema up to ``revision``."""
    with _migration_errors(revision):
        command.upgrade(alembic_config(engine), revision)


def downgrade(engine: Engine, revision: str = "-1") -> None:
    """Migrate the registry schema down to ``revision`` (default: one step)."""
    with _migration_errors(revision):
        command.downgrade(alembic_config(engine), revision)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


@contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (SQLite's own locks are ``fcntl`` ones, which
    ``flock`` does not touch): two first runs do not migrate one file at once."""
    with open(path, "rb") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _corrupt(path: Path, exc: DatabaseError) -> RegistryDatabaseError:
    return RegistryDatabaseError(
        f"registry {path} is not a readable SQLite database ({exc.orig}): restore it from a "
        "backup, or move it away to start an empty registry"
    )


def schema_at_head(engine: Engine) -> None:
    """Bring the registry's schema to this tomoloop's head revision where that is safe.

    The embedded registry (a SQLite file: one user, no administrator) is created or
    migrated to the head on first use, under a file lock. A server registry is never
    migrated behind its administrator's back: behind the head it is an error naming
    ``tomoloop db upgrade``.

    Raises:
        RegistryDatabaseError: a corrupt SQLite file; a server registry behind the head; a
            registry at a revision this tomoloop does not know (made by a newer one).
    """
    path = sqlite_file(engine.url.render_as_string(hide_password=False))
    known, head = revisions(), revisions()[-1]
    try:
        current = current_revision(engine)
        if current == head:
            return
        if current is not None and current not in known:
            raise RegistryDatabaseError(
                f"the registry is at schema revision {current}, which this tomoloop (head "
                f"{head}) does not know: a newer tomoloop made it; upgrade tomoloop"
            )
        if engine.dialect.name != "sqlite":
            raise RegistryDatabaseError(
                f"the registry {engine.url.render_as_string(hide_password=True)} is at schema "
                f"revision {current or '(empty)'}, this tomoloop needs {head}: run "
                "`tomoloop db upgrade` (back the database up first)"
            )
        if path is None:
            upgrade(engine)
            return
        with _exclusive(path):
            upgrade(engine)  # a no-op if another process got there first
    except OperationalError:
        raise
    except DatabaseError as exc:
        if path is None:
            raise
        raise _corrupt(path, exc) from None
