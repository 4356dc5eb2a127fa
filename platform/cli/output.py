"""What the CLI prints: one JSON document on stdout with ``--json``, tables for people
otherwise, progress bars and errors on stderr.

Only typer's own dependency rich is imported here, so ``tomoloop --help`` stays fast.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from rich.progress import Progress

out = Console()
err = Console(stderr=True)


def emit_json(document: Any) -> None:
    """One JSON document (dict or list) on one line of stdout; other values as ``str``."""
    sys.stdout.write(json.dumps(document, default=str) + "\n")


def print_rows(title: str, rows: list[dict]) -> None:
    """A table for people: one row per dict, its keys as columns."""
    table = Table(title=title)
    for key in rows[0] if rows else ["(none)"]:
        table.add_column(key)
    for row in rows:
        table.add_row(
            *(
                json.dumps(v, default=str) if isinstance(v, dict | list) else str(v)
                for v in row.values()
            )
        )
    out.print(table)


def print_result(title: str, result: dict) -> None:
    """A two-column key/value table; dicts and lists as JSON."""
    table = Table(title=title, show_header=False)
    for key, value in result.items():
        table.add_row(key, json.dumps(value) if isinstance(value, dict | list) else str(value))
    out.print(table)


def summary_table(title: str, result: dict) -> None:
    """Metrics of a training or evaluation: floats to 4 digits, ``per_class`` as its own
    table (one row per class)."""
    table = Table(title=title, show_header=False)
    for key, value in result.items():
        if key != "per_class":
            table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    out.print(table)
    per_class = result.get("per_class")
    if per_class:
        classes = Table(title="per class")
        for column in ("class", *next(iter(per_class.values()))):
            classes.add_column(column)
        for name, values in per_class.items():
            classes.add_row(name, *(f"{v:.4f}" for v in values.values()))
        out.print(classes)


def progress_bar(disable: bool) -> Progress:
    """A transient bar on stderr; none with ``--json`` (``disable``) or in a log file."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=disable or not err.is_terminal,  # a log file gets no bar and no blank line
        transient=True,
    )


def report_error(message: str, kind: str, as_json: bool) -> None:
    """One unwrapped line ``error: <message>`` on stderr (bold red only on a terminal);
    with ``--json`` also ``{"error": <message>, "kind": <kind>}`` on stdout.
    """
    message = " ".join(message.splitlines())
    if as_json:
        emit_json({"error": message, "kind": kind})
    if err.is_terminal:
        err.print(Text.assemble(("error:", "bold red"), " ", message), soft_wrap=True)
    else:
        sys.stderr.write(f"error: {message}\n")
        sys.stderr.flush()
