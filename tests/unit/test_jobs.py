"""Benchmark jobs in this process or in worker processes: the same results either way."""

import operator
import os

import pytest

from tomoloop.active.jobs import run_jobs

JOBS = [(k, pow, (k, 2)) for k in range(5)]


def test_in_this_process_jobs_run_in_order_and_each_is_timed():
    done = list(run_jobs(JOBS))
    assert [(key, result) for key, result, _ in done] == [(k, k * k) for k in range(5)]
    assert all(seconds >= 0 for _, _, seconds in done)


def test_workers_give_every_job_its_own_result_whatever_the_order():
    done = {key: result for key, result, _ in run_jobs(JOBS, workers=2)}
    assert done == {k: k * k for k in range(5)}
    where = {result for _, result, _ in run_jobs([(k, os.getpid, ()) for k in range(4)], 2)}
    assert os.getpid() not in where  # the work ran in other processes


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failing_job_raises_its_own_error(workers):
    jobs = [("fine", pow, (2, 3)), ("broken", operator.truediv, (1, 0))]
    with pytest.raises(ZeroDivisionError):
        list(run_jobs(jobs, workers))


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


@pytest.mark.slow  # two workers import torch
def test_workers_share_this_process_threads_one_each_at_least():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        found = {r for _, r, _ in run_jobs([(k, _torch_threads, ()) for k in range(2)], 2)}
        assert found == {2}  # 4 threads, 2 workers: no core runs two busy threads
    finally:
        torch.set_num_threads(before)
