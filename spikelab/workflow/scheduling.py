"""One pending wake-up of Snakemake's scheduler at a time, not one more per scheduling round.

Snakemake 9's job scheduler (``JobScheduler.schedule``) waits on a semaphore that a finished
job releases. With a job rate limit (``--max-jobs-per-timespan``, default ``100/1s``), every
round that leaves ready jobs waiting (more ready jobs than cores: the whole of a big run) also
starts a timer that releases the semaphore again after the timespan
(``_schedule_reevalutation``), and the round that timer wakes starts another. Each job that
finishes starts one more such chain, so a run of n jobs ends with about n rounds a second,
each selecting jobs and stating the inputs of every ready job: 17 439 rounds for the 235 jobs
of 3000 recordings, about 600 s of CPU at 10 000 recordings (630 jobs), competing with the
jobs for the cores. One pending timer at a time keeps what the timer is for (a round after the
timespan, when the rate limit held jobs back); the rounds that job completions start are
unchanged.
"""

from __future__ import annotations

import threading
from typing import Any

_pending_lock = threading.Lock()


def coalesce_reevaluations() -> bool:
    """Make Snakemake's scheduler keep at most one pending re-evaluation timer; return
    whether it did (False, and nothing changed, when Snakemake's scheduler is not what this
    expects)."""
    try:
        from snakemake.scheduling.job_scheduler import JobScheduler
    except ImportError:
        return False
    original = JobScheduler.__dict__.get("_schedule_reevalutation")
    if original is None or getattr(original, "coalesced", False):
        return False
    if not hasattr(JobScheduler, "schedule"):
        return False

    def schedule_reevaluation(self: Any, delay: float) -> None:
        with _pending_lock:
            if getattr(self, "_spikelab_reevaluation_pending", False):
                return  # the pending one wakes the scheduler, which starts the next if needed
            self._spikelab_reevaluation_pending = True

        def wake() -> None:
            with _pending_lock:
                self._spikelab_reevaluation_pending = False
            self._open_jobs.release()

        threading.Timer(delay, wake).start()

    schedule_reevaluation.coalesced = True  # type: ignore[attr-defined]
    schedule_reevaluation.__doc__ = original.__doc__
    JobScheduler._schedule_reevalutation = schedule_reevaluation
    return True
