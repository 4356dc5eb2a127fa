"""Stopping the background servers tomoloop starts (Label Studio, the HTTP app)."""

import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner

from tomoloop.adapters.labelstudio_server import alive, stop_group
from tomoloop.cli import app

MARKER = "tomoloop-test-server"


def test_stop_group_stops_a_marked_group_leader_once():
    server = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", MARKER], start_new_session=True
    )
    try:
        _wait_for_command_line(server.pid)
        assert not stop_group(server.pid, b"another-marker", timeout=5)  # never a stranger
        assert alive(server.pid)
        assert stop_group(server.pid, MARKER.encode(), timeout=5)
        assert not alive(server.pid)  # stop_group reaped its own child
        assert not stop_group(server.pid, MARKER.encode(), timeout=5)  # gone: nothing to do
    finally:
        server.kill()
        server.wait()


def _wait_for_command_line(pid: int) -> None:
    """Until the child's /proc command line holds the marker: right after Popen returns
    it can still read empty (the exec not visible yet), as a long-running server's never
    does."""
    deadline = time.monotonic() + 10
    while MARKER.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes():
        assert time.monotonic() < deadline, "the child never showed its command line"
        time.sleep(0.01)


def test_stopping_servers_that_never_ran_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("TOMOLOOP_HOME", str(tmp_path))
    runner = CliRunner()
    api = runner.invoke(app, ["serve-api", "--stop"])
    assert api.exit_code == 0 and "the background HTTP app was not running" in api.stdout
    label_studio = runner.invoke(app, ["labelstudio", "down"])
    assert label_studio.exit_code == 0
    assert "Label Studio was not running" in label_studio.stdout
