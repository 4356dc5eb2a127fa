"""Is the process that runs a job still there? Host, pid and the process's start time
(a pid the system gave to a new process does not count) on this machine; a heartbeat on
any other.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from datetime import datetime

import psutil

HEARTBEAT_S = 60.0  # how often a running job says it is alive
STALE_S = 600.0  # a job on another host silent this long is gone


@dataclass(frozen=True)
class ProcessId:
    """A process: its host name, pid and start time (seconds since the epoch)."""

    host: str
    pid: int
    started: float


def this_process() -> ProcessId:
    return ProcessId(socket.gethostname(), psutil.Process().pid, psutil.Process().create_time())


def gone_reason(
    owner: ProcessId | None, last_sign: datetime, now: datetime, stale_s: float = STALE_S
) -> str | None:
    """Why the process ``owner`` that ran a job is gone (None: it may still run).

    On this host: no process with its pid, or one started at another time (the pid was
    reused). Elsewhere, or when no owner was recorded: no sign of life (``last_sign``, a
    heartbeat or the start) for ``stale_s`` seconds.
    """
    if owner is not None and owner.host == socket.gethostname():
        try:
            started = psutil.Process(owner.pid).create_time()
        except psutil.NoSuchProcess:
            return f"its process {owner.pid} on {owner.host} is gone"
        if abs(started - owner.started) > 1.0:
            return f"its process {owner.pid} on {owner.host} is gone (the pid was reused)"
        return None
    silent = (now - last_sign).total_seconds()
    if silent > stale_s:
        where = "" if owner is None else f" on {owner.host}"
        return f"no heartbeat{where} for {silent / 60:.0f} min"
    return None
