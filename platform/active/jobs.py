"""Independent jobs of a benchmark (a seed's initial model, an arm's seed), run one after
another in this process or side by side in worker processes.

Workers are spawned (never forked: a fork of a process whose OpenMP threads already ran
can hang) and share this process's torch threads between them, at least one each. A job
reads nothing but its arguments, so its result is the same wherever it runs with the same
number of threads (floating-point sums split over other threads round differently).
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, TypeVar

K = TypeVar("K", bound=Hashable)
Job = tuple[K, Callable[..., Any], tuple[Any, ...]]
"""``(key, function, arguments)``; function and arguments must pickle when run in workers
(a module-level function, plain data and tensors)."""


def run_jobs(jobs: Sequence[Job[K]], workers: int = 1) -> Iterator[tuple[K, Any, float]]:
    """``(key, result, seconds)`` of every job as it finishes: in this process and in
    order when ``workers`` is 1, else in up to ``workers`` processes in the order they
    finish. A job's exception is raised here; the jobs not started by then are dropped.
    """
    if workers <= 1:
        for key, function, args in jobs:
            yield key, *_timed(function, *args)
        return
    pool = ProcessPoolExecutor(
        max(1, min(workers, len(jobs))),
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_use_threads,
        initargs=(max(1, _torch_threads() // workers),),
    )
    try:
        futures = {pool.submit(_timed, function, *args): key for key, function, args in jobs}
        for future in as_completed(futures):
            yield futures[future], *future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _timed(function: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    """``function(*args)`` and the seconds it took."""
    began = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - began


def _torch_threads() -> int:
    """torch's intra-op threads here (os.cpu_count() when torch is not loaded)."""
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else os.cpu_count() or 1


def _use_threads(threads: int) -> None:
    """A worker's initializer: ``threads`` torch threads, set before any job runs (an
    environment variable is read too late once a library has loaded OpenMP)."""
    import torch

    torch.set_num_threads(threads)
