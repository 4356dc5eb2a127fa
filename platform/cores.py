"""How many threads torch's CPU kernels should use now: the cores other processes leave idle.

torch starts one OpenMP thread per core. When other processes keep those cores busy, every
parallel region waits for a thread that is not running, and small kernels (a stencil sweep,
a batch of 64² tiles) take many times longer than on one thread: measured on a shared
2-core machine, a TauFactor solve 9 s on one thread against 78 s on two.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

import torch


def _cpu_times() -> tuple[int, int]:
    """(idle, total) clock ticks of all CPUs since boot, from /proc/stat."""
    with open("/proc/stat") as stat:
        ticks = [int(v) for v in stat.readline().split()[1:9]]
    return ticks[3] + ticks[4], sum(ticks)


def idle_cores(interval: float = 0.1) -> int:
    """Cores (≥ 1, at most this process's CPU affinity) that stood idle over the next
    ``interval`` seconds; all of the affinity where /proc/stat cannot be read.
    """
    affinity = getattr(os, "sched_getaffinity", None)  # Linux; elsewhere every core
    usable = len(affinity(0)) if affinity is not None else os.cpu_count() or 1
    try:
        idle0, total0 = _cpu_times()
        time.sleep(interval)
        idle1, total1 = _cpu_times()
    except OSError:
        return usable
    free = (os.cpu_count() or usable) * (idle1 - idle0) / max(total1 - total0, 1)
    return max(1, min(usable, round(free)))


@contextlib.contextmanager
def fitting_threads(threads: int | None = None) -> Iterator[int]:
    """torch's intra-op threads set to ``threads`` (default :func:`idle_cores`, never more
    than torch had) inside the block, put back after; yields the number used.
    """
    before = torch.get_num_threads()
    use = min(before, threads or idle_cores())
    torch.set_num_threads(use)
    try:
        yield use
    finally:
        torch.set_num_threads(before)
