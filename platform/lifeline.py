"""The processes a ``tomoloop`` command starts end with it, even when it is killed -9.

:func:`start` marks the environment with ``TOMOLOOP_OWNER=<pid>`` (every child inherits
it: Prefect's temporary API server, worker pools) and starts a watchdog: this file, run as
a small stdlib-only process in a session of its own, blocked reading a pipe that only the
command holds. However the command ends, the kernel closes the pipe; the watchdog then
sends SIGTERM to every process still carrying the mark in the command's session, and
SIGKILL to those alive 3 s later. A server deliberately started in a session of its own
(Label Studio by ``tomoloop labelstudio up`` or ``demo``) is long-lived and left running.
Linux (``/proc``); elsewhere the watchdog finds nothing to end.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

OWNER = "TOMOLOOP_OWNER"
GRACE_S = 3.0
_watchdogs: list[subprocess.Popen] = []  # held open for the life of the command


def start() -> None:
    """Make this process the owner of the children it starts from now on."""
    owner = os.getpid()
    os.environ[OWNER] = str(owner)
    watchdog = subprocess.Popen(
        [sys.executable, "-I", "-S", __file__, str(owner), str(os.getsid(0))],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # no Ctrl-C from the terminal: it outlives the command
    )
    _watchdogs.append(watchdog)


def owned(owner: int, session: int) -> list[int]:
    """Live processes (not zombies) in ``session`` whose environment carries ``owner``'s
    mark, except this one.
    """
    mark = f"{OWNER}={owner}".encode()
    found = []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone, or another user's
        state, process_session = stat[0], int(stat[3])  # fields 3 and 6 of proc(5)
        if mark in environ and process_session == session and state != "Z":
            found.append(int(entry))
    return found


def _signal(pids: list[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):  # already gone
            os.kill(pid, signum)


def end_owned(owner: int, session: int) -> None:
    """SIGTERM the processes ``owner`` left behind, SIGKILL them after :data:`GRACE_S`."""
    _signal(owned(owner, session), signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    while (left := owned(owner, session)) and time.monotonic() < deadline:
        time.sleep(0.1)
    _signal(left, signal.SIGKILL)


if __name__ == "__main__":  # the watchdog: python -I -S lifeline.py OWNER_PID SESSION_ID
    sys.stdin.buffer.read()  # returns when the owner has ended, however it ended
    end_owned(int(sys.argv[1]), int(sys.argv[2]))
