"""What Prefect's logging may print on the terminal of a ``tomoloop`` command.

The command line prints a :class:`~tomoloop.errors.TomoloopError` as one line itself, so
Prefect's console must not print it again as a traceback ("Encountered exception during
execution", "Task run failed with exception"), nor Prefect's own progress chatter
("Starting temporary server", "Beginning flow run", "Finished in state ...", "EventsWorker -
Still processing items" at exit). What stays: the flows' own messages (``get_run_logger()``
in ``tomoloop.flows``, any level), Prefect's own errors, and the traceback of any other
exception (a bug). Prefect's API handler is not touched: the run, its state and its logs
are still recorded on the Prefect server.

``tomoloop.cli.main`` installs :class:`TerminalHandler` through Prefect's logging settings
(``PREFECT_LOGGING_HANDLERS_CONSOLE_CLASS``), before any flow is imported.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import prefect
from prefect.logging.handlers import PrefectConsoleHandler

from tomoloop.errors import TomoloopError

_PREFECT_SOURCE = str(Path(prefect.__file__).parent) + os.sep


def shown_on_terminal(record: logging.LogRecord) -> bool:
    """Whether a log record reaches the terminal of a ``tomoloop`` command."""
    error = record.exc_info[1] if record.exc_info else None
    if isinstance(error, TomoloopError):
        return False
    if not record.pathname.startswith(_PREFECT_SOURCE):
        return True
    return record.levelno >= logging.ERROR and not str(record.msg).startswith(
        "Finished in state"
    )


class TerminalHandler(PrefectConsoleHandler):
    """Prefect's console handler, showing only :func:`shown_on_terminal` records."""

    def filter(self, record: logging.LogRecord) -> bool:
        return shown_on_terminal(record) and super().filter(record)

