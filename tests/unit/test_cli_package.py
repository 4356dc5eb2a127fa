"""The CLI package's own promises: ``--help`` and usage errors load no heavy library and
start no watchdog; the lifeline watchdog starts only for commands that start processes,
and only when the command is its own process; ``--json`` is read from the command line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from tomoloop import lifeline
from tomoloop.cli import app, json_requested
from tomoloop.cli.runner import Entry, run

# pydantic: typer 0.29 builds a pydantic adapter per option (+0.3 s a command); 0.28 does not
HEAVY = {"torch", "sqlalchemy", "prefect", "detectron2", "fastapi", "label_studio_sdk",
         "skimage", "matplotlib", "numpy", "alembic", "uvicorn", "napari", "qtpy",
         "pydantic"}  # fmt: skip

LOADED = """
import runpy, sys
sys.argv = ["tomoloop", *sys.argv[1:]]
try:
    runpy.run_module("tomoloop.cli", run_name="__main__")
except SystemExit as exc:
    code = exc.code
heavy = {heavy!r}
print(sorted({{m.split(".")[0] for m in sys.modules}} & (heavy | {{"tomoloop"}})
             | ({{"tomoloop.lifeline"}} & set(sys.modules))))
"""


def loaded(*args: str) -> list[str]:
    """Top-level heavy packages (and the lifeline) a ``tomoloop ARGS`` process imported."""
    done = subprocess.run(
        [sys.executable, "-c", LOADED.format(heavy=HEAVY), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return json.loads(done.stdout.strip().splitlines()[-1].replace("'", '"'))


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["train", "--help"],
        ["registry", "--help"],
        ["view", "--help"],
        ["train", "--bogus"],  # a usage error
        ["predict"],  # a missing option
    ],
)
def test_help_and_usage_errors_load_no_heavy_library_and_start_no_watchdog(args):
    assert loaded(*args) == ["tomoloop"]


def test_a_command_that_uses_the_registry_loads_it_only_when_it_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("TOMOLOOP_HOME", str(tmp_path))
    assert "sqlalchemy" in loaded("registry", "volumes", "--json")


def _command(children: bool) -> typer.Typer:
    one = typer.Typer()

    @one.command()
    def work() -> None:
        run(lambda: {"ok": True}, True, children=children)

    return one


@pytest.mark.parametrize(
    ("children", "obj", "started"),
    [
        (True, Entry(owns_process=True), 1),  # tomoloop flows/servers as a process
        (False, Entry(owns_process=True), 0),  # tomoloop registry ... as a process
        (True, None, 0),  # a test invoking the app inside its own process
    ],
)
def test_the_watchdog_starts_only_for_commands_with_children_run_as_a_process(
    monkeypatch, children, obj, started
):
    calls = []
    monkeypatch.setattr(lifeline, "start", lambda: calls.append(1))
    result = CliRunner().invoke(_command(children), [], obj=obj)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"ok": True}
    assert len(calls) == started


def test_json_is_known_from_the_command_line_before_a_double_dash():
    assert json_requested(["registry", "volumes", "--json"])
    assert not json_requested(["registry", "volumes"])
    assert not json_requested(["stack", "info", "--", "--json"])



def _command_paths(group: typer.main.TyperGroup, prefix: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        yield (*prefix, name)
        if isinstance(command, typer.main.TyperGroup):
            yield from _command_paths(command, (*prefix, name))


def test_every_command_help_renders():
    """A help text rich cannot render (``[/UNIT]`` read as a closing tag) fails that
    command's ``--help`` with a traceback; every command's help must print."""
    from tomoloop.cli import app

    paths = list(_command_paths(typer.main.get_command(app)))
    assert len(paths) > 30
    for path in paths:
        done = CliRunner().invoke(app, [*path, "--help"])
        assert done.exit_code == 0, (path, done.output, done.exception)
        assert "Usage" in done.output, path


def test_the_command_list_gives_each_summary_as_written_not_broken_at_source_lines(
    monkeypatch,
):
    """``tomoloop --help`` lists each command with the first paragraph of its docstring;
    the line breaks of the source are not line breaks of the summary (on a terminal wide
    enough, each summary is one line)."""
    import inspect

    import typer.rich_utils

    monkeypatch.setattr(typer.rich_utils, "MAX_WIDTH", 1000)
    listed = CliRunner().invoke(app, ["--help"]).output
    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        summary = inspect.cleandoc(command.help or "").split("\n\n")[0]
        line = " ".join(summary.replace("`", "").replace("\\[", "[").split())
        assert line in listed, name


def test_no_flag_reads_as_a_double_negation():
    """A bool option named ``no_x`` gets typer's ``--no-no-x`` as its off switch unless its
    flag is spelled out; no command may offer such a flag."""
    from tomoloop.cli import app

    root = typer.main.get_command(app)
    flags = []
    for path in _command_paths(root):
        command = root
        for name in path:
            command = command.commands[name]
        flags += [f for p in command.params for f in (*p.opts, *p.secondary_opts)]
    assert "--no-augment" in flags
    assert not [f for f in flags if f.startswith("--no-no-")]


def test_the_embedded_prefect_sends_no_telemetry_unless_the_user_asks(monkeypatch):
    """Prefect reads the names tomoloop sets: its server's telemetry service is off and its
    client does not track."""
    from prefect._internal.analytics.enabled import is_telemetry_enabled
    from prefect.settings import Settings

    from tomoloop.cli import PREFECT_DEFAULTS

    for name in PREFECT_DEFAULTS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("CI", raising=False)  # Prefect turns telemetry off in CI by itself
    assert Settings().server.analytics_enabled is True
    for name, value in PREFECT_DEFAULTS.items():
        monkeypatch.setenv(name, value)
    assert Settings().server.analytics_enabled is False
    assert is_telemetry_enabled() is False
    assert Settings().server.ephemeral.startup_timeout_seconds == 300


@pytest.mark.parametrize(
    "args, flow, expected",
    [
        (
            ["round", "--dataset", "d", "--unit", "region", "--region", "16", "--budget-px",
             "512", "--min-distance", "20", "--volume", "scan2", "--device", "cpu",
             "--no-push", "--seed", "4"],
            "al_round",
            {"volumes": ("scan2",), "device": "cpu", "unit": "region", "region": 16,
             "budget_px": 512, "min_distance": 20, "push": False},
        ),
        (
            ["loop", "--dataset", "d", "--annotator", "human", "--unit", "region",
             "--budget-px", "1024", "--volume", "a", "--volume", "b", "--per-volume", "2",
             "--margin", "0.01"],
            "loop",
            {"volumes": ("a", "b"), "device": "auto", "unit": "region", "region": 32,
             "budget_px": 1024, "min_distance": None, "per_volume": 2, "margin": 0.01},
        ),
    ],
)  # fmt: skip
def test_round_and_loop_hand_their_options_to_the_flow(monkeypatch, args, flow, expected):
    """What the command line says reaches the flow (the flow itself is tested for real in
    tests/integration/test_loop.py); here it only records what it was given."""
    import tomoloop.flows.loop as flows

    given: dict = {}
    monkeypatch.setattr(flows, flow, lambda *a, **kw: given.update(kw) or {"rounds": []})
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    assert {k: given[k] for k in expected} == expected
