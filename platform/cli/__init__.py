"""The ``tomoloop`` command line.

Every command that reports results takes ``--json`` and then prints exactly one JSON
document on stdout; otherwise it prints tables for people. Errors a user can fix are
printed as one message, without a traceback, and the exit code is non-zero.

One module per command group (the table below says which module holds which command);
each command checks its options, then hands its work to :func:`tomoloop.cli.runner.run`.
Modules import only typer and rich at the top: libraries a command needs (torch,
SQLAlchemy, Prefect, …) are imported inside it, so ``--help`` and usage errors are quick.
The command modules do not use ``from __future__ import annotations``: typer would then
evaluate every option's string annotation twice per command on every start (a third of the
time ``tomoloop --help`` spent); names imported only for type checking are quoted instead.
"""

from __future__ import annotations

import os
import sys

import typer
from typer._click.exceptions import NoArgsIsHelpError, UsageError  # typer vendors click

from tomoloop.cli import (
    benchmark,
    coco,
    db,
    demo,
    export,
    ingest,
    labelstudio,
    loop,
    microstructure,
    particles,
    predict,
    registry,
    review,
    serve,
    stacks,
    train,
    view,
)
from tomoloop.cli.options import parse_voxel_size
from tomoloop.cli.output import emit_json, report_error
from tomoloop.cli.runner import Entry
from tomoloop.errors import TomoloopError

__all__ = ["app", "emit_json", "main", "parse_voxel_size"]

app = typer.Typer(
    help="tomoloop: active-learning segmentation of 3D X-ray CT and FIB-SEM stacks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
app.add_typer(coco.coco_app, name="coco")
app.add_typer(stacks.stack_app, name="stack")
app.add_typer(db.db_app, name="db")
app.add_typer(registry.registry_app, name="registry")
app.add_typer(labelstudio.labelstudio_app, name="labelstudio")
app.add_typer(review.review_app, name="review")
app.add_typer(particles.flaws_app, name="flaws")
app.add_typer(benchmark.benchmark_app, name="benchmark")
app.add_typer(export.export_app, name="export")

app.command()(ingest.ingest)
app.command()(train.train)
app.command()(train.evaluate)
app.command()(predict.predict)
app.command()(predict.score)
app.command("predict-distributed")(predict.predict_distributed)
app.command()(view.view)
app.command("push")(labelstudio.push_command)
app.command("pull")(labelstudio.pull_command)
app.command("serve-api")(serve.serve_api)
app.command("gold")(ingest.gold)
app.command("round")(loop.al_round_command)
app.command("retrain")(loop.retrain_command)
app.command("promote")(loop.promote_command)
app.command("loop")(loop.loop_command)
app.command("serve")(serve.serve)
app.command("microstructure")(microstructure.microstructure_command)
app.command("particles")(particles.particles_command)
app.command()(demo.demo)


def json_requested(args: list[str]) -> bool:
    """Whether a command line asks for ``--json`` (before a ``--``). The one way errors
    learn it: a usage error is raised before any option is read."""
    return "--json" in (args[: args.index("--")] if "--" in args else args)


def usage_message(exc: UsageError) -> str:
    """A usage error (unknown option, missing argument, bad value) as one sentence that
    names the command's help, e.g. ``No such option: --x; see 'tomoloop predict --help'``.
    """
    command = exc.ctx.command_path if exc.ctx is not None else "tomoloop"
    return f"{exc.format_message().rstrip('.')}; see '{command} --help'"


PREFECT_DEFAULTS = {
    # Prefect's console logging through tomoloop's handler: user errors as one line.
    "PREFECT_LOGGING_HANDLERS_CONSOLE_CLASS": "tomoloop.terminal.TerminalHandler",
    # The temporary Prefect server a flow starts sends no telemetry (it printed "Failed to
    # send telemetry" errors where there is no network), nor does Prefect's client.
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    # The temporary server may take more than Prefect's default 20 s to start on a loaded
    # machine; a flow then failed before its first step.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "300",
}
"""Environment every command sets unless the user set the variable: Prefect's own settings,
read by the flows this process runs and by the servers and workers it starts."""


def main() -> None:
    """Console entry point: run the app, print TomoloopErrors and usage errors as one line
    without a traceback (also errors raised inside Prefect flows, whose console logging is
    quieted by :mod:`tomoloop.terminal`); exit 2 for both.
    """
    for name, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(name, value)
    as_json = json_requested(sys.argv[1:])
    try:
        code = app(standalone_mode=False, obj=Entry(owns_process=True))
    except TomoloopError as exc:
        report_error(str(exc), type(exc).__name__, as_json)
        sys.exit(exc.exit_code)
    except NoArgsIsHelpError as exc:
        exc.show()  # a group called bare: its help, as click does
        sys.exit(exc.exit_code)
    except UsageError as exc:
        report_error(usage_message(exc), "UsageError", as_json)
        sys.exit(exc.exit_code)
    except typer.Abort:
        report_error("aborted", "Abort", as_json)
        sys.exit(1)
    if isinstance(code, int) and code:  # typer.Exit(code) or --help's Exit(0)
        sys.exit(code)
