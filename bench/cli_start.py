"""Benchmark: how long the ``tomoloop`` command takes to answer when no work is asked of it.

Times whole processes, as a user waits for them: ``python -m tomoloop.cli --help``,
``tomoloop train --help`` (the console script), a usage error (``tomoloop train --bogus``,
exit 2) and two floors: ``python -c pass``, which any Python process pays, and a two-command
typer app answering ``a --bogus``, which any typer command line pays (typer builds a
pydantic adapter as soon as it parses a subcommand). Prints the median of ``--repeat`` runs:
wall seconds with their ratio to ``python -c pass``, and CPU seconds (user + sys of the
process), which is what the wall time would be on an idle machine.

With ``--before TREE`` (a checkout of the code before a change, e.g.
``git worktree add /work/wt/cli-old main``; no venv needed) every case is also timed against
that tree's sources, interleaved with this tree's runs so both see the same machine load,
and the speed-up is printed.

Run: ``.venv/bin/python bench/cli_start.py [--repeat 9] [--before /work/wt/cli-old]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PARTS = ("adapters", "db", "flows")  # folders mapped into the tomoloop namespace
TOMOLOOP = str(Path(sys.executable).with_name("tomoloop"))
TYPER_APP = """
import typer
app = typer.Typer(add_completion=False)
@app.command()
def a(x: int = 1) -> None:
    pass
@app.command()
def b(x: int = 1) -> None:
    pass
app()
"""
CASES = {
    "python -c pass (floor)": ([sys.executable, "-c", "pass"], 0),
    "typer app a --bogus (typer's floor)": ([sys.executable, "-c", TYPER_APP, "a", "--bogus"], 2),
    "python -m tomoloop.cli --help": ([sys.executable, "-m", "tomoloop.cli", "--help"], 0),
    "tomoloop train --help": ([TOMOLOOP, "train", "--help"], 0),
    "tomoloop train --bogus (usage error)": ([TOMOLOOP, "train", "--bogus"], 2),
}


def import_root(tree: Path, into: Path) -> Path:
    """A folder that, first on PYTHONPATH, makes ``tomoloop`` import from ``tree``: a
    ``tomoloop`` copy of ``platform/`` made of links, with adapters/, db/ and flows/ inside."""
    package = into / "tomoloop"
    package.mkdir()
    for entry in (tree / "platform").iterdir():
        (package / entry.name).symlink_to(entry)
    for part in PARTS:
        (package / part).symlink_to(tree / part)
    return into


def seconds(command: list[str], code: int, env: dict[str, str]) -> tuple[float, float]:
    """(wall, CPU) seconds of one run of ``command``; raises if it does not exit ``code``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != code:
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}: {done.stderr.decode()}")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9, help="runs per case (median)")
    parser.add_argument("--before", type=Path, help="a checkout of the code before a change")
    args = parser.parse_args()
    sides = {"now": dict(os.environ)}
    with tempfile.TemporaryDirectory() as scratch:
        if args.before is not None:
            root = import_root(args.before.resolve(), Path(scratch))
            sides["before"] = {**os.environ, "PYTHONPATH": str(root)}
        times = {(case, side): [] for case in CASES for side in sides}
        for _ in range(args.repeat):
            for case, (command, code) in CASES.items():
                for side, env in sides.items():
                    times[case, side].append(seconds(command, code, env))
    wall = {key: statistics.median(w for w, _ in runs) for key, runs in times.items()}
    cpu = {key: statistics.median(c for _, c in runs) for key, runs in times.items()}
    floor = next(iter(CASES))
    print(f"median of {args.repeat} runs: wall s (× python -c pass), CPU s")
    header = f"{'case':40} {'now: wall (×floor) CPU':>23}"
    if "before" in sides:
        header += f" {'before':>23} {'speed-up':>9}"
    print(header)
    for case in CASES:
        line = f"{case:40}"
        for side in sides:
            ratio = wall[case, side] / wall[floor, side]
            line += f" {wall[case, side]:6.3f} ({ratio:4.1f}×) {cpu[case, side]:6.3f}"
        if "before" in sides:
            line += f" {wall[case, 'before'] / wall[case, 'now']:8.1f}×"
        print(line)

if __name__ == "__main__":
    main()
