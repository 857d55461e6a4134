"""What per-recording isolation costs: a batch job's recordings converted in the job's own
process, in a forked child per recording (the former design), and in a persistent worker
(``spikelab.jobs.for_each_recording`` with limits: one child takes recording after recording).

Usage::

    .venv/bin/python bench/bench_isolation.py [--recordings 200] [--repeats 5] [--only nwb figures]

For each format (HDF5 ragged, pickle, KiloSort, NWB) and for the report figures, one process
(logging to a file, as a job does) converts the same ``--recordings`` small recordings (8-50
units, 10 s) in-process, with a child per recording (``RecordingLimits(per_child=1)``) and
with a worker, in turn, ``--repeats`` times each (after one warm-up pass of each), and prints
the median time per recording of each, the isolation cost per recording (isolated minus
in-process) of both designs, and the children the worker mode forked per batch. Target:
<= 1 ms per recording. Compared side by side in one run; absolute times vary with the
machine.
"""

from __future__ import annotations

import argparse
import logging
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_workflow import make_small_recordings  # noqa: E402

TARGETS = {
    "hdf5/ragged": ("hdf5", {"style": "ragged"}),
    "pickle": ("pickle", {}),
    "kilosort": ("kilosort", {}),
    "nwb": ("nwb", {}),
}


def _clocks() -> tuple[float, float]:
    """Wall time and CPU time (this process and its reaped children, user + system), s."""
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    cpu = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
    return time.perf_counter(), cpu


def _per_item(start: tuple[float, float], n: int) -> tuple[float, float]:
    end = _clocks()
    return (end[0] - start[0]) / n, (end[1] - start[1]) / n


def _time_export(target, items, limits) -> tuple[float, float]:
    from spikelab.workflow.export import export_batch

    t0 = _clocks()
    results = export_batch(
        target.spec.writer(), target, items, default_fs_Hz=20000.0, limits=limits
    )
    spent = _per_item(t0, len(items))
    assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
    return spent


def _time_figures(items, limits) -> tuple[float, float]:
    from spikelab.report.jobs import draw_batch

    t0 = _clocks()
    rows = draw_batch(items, limits=limits)
    spent = _per_item(t0, len(items))
    assert all(r["status"] == "ok" for r in rows)
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recordings", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", nargs="*", help="jobs to run (default: all)")
    args = parser.parse_args()

    from spikelab.jobs import RecordingLimits, setup_logging
    from spikelab.report.jobs import FigureItem
    from spikelab.workflow.export import ExportItem
    from spikelab.workflow.targets import Target

    forks = _count_forks()

    modes = {  # column -> limits (None: in-process)
        "in-process": None,
        "child each": RecordingLimits(job_mem_mb=2000, per_child=1),
        "worker": RecordingLimits(job_mem_mb=2000),
    }
    with tempfile.TemporaryDirectory(prefix="spikelab-bench-isolation-") as tmp:
        root = Path(tmp)
        setup_logging(root / "job.log", stderr_level=logging.CRITICAL)  # as a job logs
        sources = make_small_recordings(root / "in", args.recordings)
        print(
            f"{args.recordings} small recordings (8-50 units, 10 s), median of {args.repeats}; "
            "ms per recording:\nwall time in-process, and what isolation adds (isolated - "
            "in-process) in wall time and in CPU time (the job and its children)"
        )
        print(
            f"{'job':<12} {'in-process':>10} {'child each':>11} {'worker':>7} "
            f"{'CPU: child each':>16} {'worker':>7} {'forks/batch':>12}"
        )
        jobs = []
        for name, (fmt, options) in TARGETS.items():
            target = Target(name, fmt, options)
            out = root / name
            ext = target.spec.extension
            items = [ExportItem(p.stem, str(p), str(out / f"{p.stem}{ext}")) for p in sources]
            jobs.append((name, lambda lim, t=target, i=items: _time_export(t, i, lim)))
        figures = [FigureItem(p.stem, str(p), str(root / "fig" / f"{p.stem}.png")) for p in sources]
        jobs.append(("figures", lambda lim, i=figures: _time_figures(i, lim)))
        for name, run in jobs:
            if args.only and name not in args.only:
                continue
            for limits in modes.values():
                run(limits)  # warm-up: imports, page cache
            wall: dict[str, list[float]] = {mode: [] for mode in modes}
            cpu: dict[str, list[float]] = {mode: [] for mode in modes}
            worker_forks = []
            for _ in range(args.repeats):
                for mode, limits in modes.items():
                    forks[0] = 0
                    seconds, cpu_seconds = run(limits)
                    wall[mode].append(seconds * 1e3)
                    cpu[mode].append(cpu_seconds * 1e3)
                    if mode == "worker":
                        worker_forks.append(forks[0])
            a, b, c = (statistics.median(wall[mode]) for mode in modes)
            x, y, z = (statistics.median(cpu[mode]) for mode in modes)
            print(
                f"{name:<12} {a:>10.2f} {b - a:>11.2f} {c - a:>7.2f} {y - x:>16.2f} "
                f"{z - x:>7.2f} {statistics.median(worker_forks):>12g}",
                flush=True,
            )


def _count_forks() -> list[int]:
    """Count this process's forks (in ``[0]``)."""
    import os

    count = [0]
    real = os.fork

    def fork() -> int:
        count[0] += 1
        return real()

    os.fork = fork
    return count


if __name__ == "__main__":
    main()
