"""Scratch folders under ``$TOMOLOOP_HOME/tmp``, which outlive no process.

A scratch folder is named ``<prefix>@<host>@<pid>@<random>``: the process that made it
removes it when done, and a process killed before that (``kill -9``, power loss) leaves it
to the next :func:`scratch_dir` on the same host, which removes every folder whose process
is gone. Folders of other hosts (a shared ``TOMOLOOP_HOME``) are left to their own host.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

_SEP = "@"  # never in a host name


def stale_scratch(root: Path, host: str) -> list[Path]:
    """Scratch folders in ``root`` made on ``host`` by processes that no longer run."""
    return [entry for entry in sorted(root.iterdir()) if _stale(entry.name.split(_SEP), host)]


def _stale(parts: list[str], host: str) -> bool:
    """Whether a name split at ``@`` is a scratch folder of a dead process of ``host``."""
    if len(parts) != 4 or parts[1] != host or not parts[2].isdigit():
        return False
    return not psutil.pid_exists(int(parts[2]))


@contextmanager
def scratch_dir(home: Path, prefix: str) -> Iterator[Path]:
    """A new empty folder under ``home/tmp``, removed on exit; stale folders of dead
    processes of this host are removed first.
    """
    root = home / "tmp"
    root.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname()
    for stale in stale_scratch(root, host):
        shutil.rmtree(stale, ignore_errors=True)
    name = _SEP.join((prefix, host, str(os.getpid()), ""))
    with tempfile.TemporaryDirectory(prefix=name, dir=root) as folder:
        yield Path(folder)
