"""Snakemake's scheduler keeps one pending re-evaluation timer (spikelab.workflow.scheduling)."""

from __future__ import annotations

import inspect
import threading
import time
import types

from spikelab.workflow.scheduling import coalesce_reevaluations


def test_snakemake_s_scheduler_is_what_the_fix_expects():
    """A scheduling round that leaves ready jobs waiting under the job rate limit starts a
    re-evaluation timer, which releases the semaphore the scheduler waits on."""
    from snakemake.scheduling.job_scheduler import JobScheduler

    schedule = inspect.getsource(JobScheduler.schedule)
    assert "self._open_jobs.acquire()" in schedule
    assert "self._schedule_reevalutation(self.job_rate_limiter.timespan)" in schedule
    coalesce_reevaluations()
    assert getattr(JobScheduler._schedule_reevalutation, "coalesced", False)
    assert coalesce_reevaluations() is False  # once only


def test_many_reevaluations_while_one_is_pending_wake_the_scheduler_once():
    from snakemake.scheduling.job_scheduler import JobScheduler

    coalesce_reevaluations()
    scheduler = types.SimpleNamespace(_open_jobs=threading.Semaphore(0))
    for _ in range(50):  # fifty rounds within the timespan, as n finished jobs make
        JobScheduler._schedule_reevalutation(scheduler, 0.2)
    assert not scheduler._open_jobs.acquire(timeout=0.1)  # not before the timespan
    assert scheduler._open_jobs.acquire(timeout=2.0)  # then once
    assert not scheduler._open_jobs.acquire(timeout=0.5)  # and only once
    # The next round after the wake-up starts the next timer.
    t0 = time.monotonic()
    JobScheduler._schedule_reevalutation(scheduler, 0.05)
    assert scheduler._open_jobs.acquire(timeout=2.0)
    assert time.monotonic() - t0 >= 0.05
    assert not scheduler._open_jobs.acquire(timeout=0.3)
