"""The one way a command runs its work and reports it.

Every command checks its options, then hands its work to :func:`run`: database failures
become a :class:`~tomoloop.errors.TomoloopError` that says what to check, the result is
printed as one JSON document with ``--json`` or shown for people otherwise, and commands
that start processes get the :mod:`tomoloop.lifeline` watchdog first. Errors themselves are
printed by :func:`tomoloop.cli.main`, which knows ``--json`` from the command line.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from typer._click.globals import get_current_context  # typer vendors click

from tomoloop.cli.output import emit_json
from tomoloop.errors import TomoloopError

R = TypeVar("R")


@dataclass(frozen=True)
class Entry:
    """What :func:`tomoloop.cli.main` tells the command it runs (click's context object).
    ``owns_process``: the command is the process of its own, so the children it starts
    must end with it; a test that invokes the app inside its own process passes nothing.
    """

    owns_process: bool = False


def run(
    work: Callable[[], R],
    as_json: bool,
    show: Callable[[R], object] | None = None,
    *,
    document: Callable[[R], Any] | None = None,
    children: bool = False,
) -> None:
    """Run ``work()`` and print its result: ``document(result)`` (default the result) as one
    JSON document with ``--json``, else ``show(result)`` (nothing when ``show`` is None).
    ``children``: the work starts processes (a Prefect flow's temporary server, a cluster,
    a server), which end with this command even when it is killed.
    """
    if children:
        own_children()
    with database_errors():
        result = work()
    if as_json:
        emit_json(result if document is None else document(result))
    elif show is not None:
        show(result)


def own_children() -> None:
    """Start the lifeline watchdog when this command is its own process (see :class:`Entry`)."""
    context = get_current_context(silent=True)
    if context is not None and isinstance(context.obj, Entry) and context.obj.owns_process:
        from tomoloop import lifeline

        lifeline.start()  # children (Prefect's temporary server) end with this process


@contextmanager
def database_errors() -> Iterator[None]:
    """Turn "cannot connect" into a TomoloopError that says what to check, and a damaged
    database into one that says to restore it. SQLAlchemy is not imported for this: when
    it is not loaded, no error can be one of its errors.
    """
    try:
        yield
    except Exception as exc:
        sqlalchemy = sys.modules.get("sqlalchemy.exc")
        if sqlalchemy is None or not isinstance(exc, sqlalchemy.DatabaseError):
            raise
        if isinstance(exc, sqlalchemy.OperationalError):
            raise TomoloopError(
                f"cannot reach the registry database ({exc.orig}): check "
                "TOMOLOOP_DATABASE_URL and that the server is running"
            ) from exc
        if type(exc) is not sqlalchemy.DatabaseError:  # integrity errors and the like are bugs
            raise
        raise TomoloopError(
            f"the registry database is damaged ({exc.orig}): restore it from a backup"
        ) from exc
