"""What a killed command leaves behind: its children end with it, its scratch folder is
removed by the next run on the same host.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from tomoloop.lifeline import OWNER, end_owned, owned
from tomoloop.scratch import scratch_dir

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_the_owners_children_end_but_a_server_in_its_own_session_stays():
    owner = _dead_pid()  # the command, killed
    env = os.environ | {OWNER: str(owner)}
    child = subprocess.Popen(SLEEPER, env=env)
    server = subprocess.Popen(SLEEPER, env=env, start_new_session=True)  # e.g. Label Studio
    stranger = subprocess.Popen(SLEEPER)  # not the owner's
    try:
        assert owned(owner, os.getsid(0)) == [child.pid]
        end_owned(owner, os.getsid(0))
        assert child.wait(timeout=5) == -15  # SIGTERM
        assert server.poll() is None and stranger.poll() is None
    finally:
        for process in (child, server, stranger):
            process.kill()
            process.wait()


def test_scratch_of_dead_processes_of_this_host_is_removed_by_the_next_run(tmp_path):
    host = socket.gethostname()
    root = tmp_path / "tmp"
    root.mkdir()
    dead = root / f"tomoloop-ingest@{host}@{_dead_pid()}@x1"
    alive = root / f"tomoloop-ingest@{host}@{os.getppid()}@x2"
    elsewhere = root / f"tomoloop-ingest@another-host@{_dead_pid()}@x3"
    for folder in (dead, alive, elsewhere):
        (folder / "coco").mkdir(parents=True)
    with scratch_dir(tmp_path, "tomoloop-ingest") as mine:
        assert mine.parent == root
        assert mine.name.startswith(f"tomoloop-ingest@{host}@{os.getpid()}@")
        assert not dead.exists() and alive.exists() and elsewhere.exists()
        (mine / "coco.zip").write_bytes(b"zip")
    assert not mine.exists()
