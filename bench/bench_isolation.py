"""What per-recording isolation costs: each recording of a batch job converted in a forked child
(``spikelab.jobs.for_each_recording`` with limits) versus in the job's own process.

Usage::

    .venv/bin/python bench/bench_isolation.py [--recordings 200] [--repeats 5]

For each format (HDF5 ragged, pickle, KiloSort, NWB) and for the report figures, one process
converts the same ``--recordings`` small recordings (8-50 units, 10 s) in-process and isolated,
alternating, ``--repeats`` times each (after one warm-up pass of each), and prints the median
time per recording of both and their difference: the isolation cost per recording (target:
<= 5 ms). Ratios measured side by side in one run; absolute times vary with the machine.
"""

from __future__ import annotations

import argparse
import logging
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


def _time_export(target, items, limits) -> float:
    from spikelab.workflow.export import export_batch

    t0 = time.perf_counter()
    results = export_batch(
        target.spec.writer(), target, items, default_fs_Hz=20000.0, limits=limits
    )
    seconds = time.perf_counter() - t0
    assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
    return seconds / len(items)


def _time_figures(items, limits) -> float:
    from spikelab.report.jobs import draw_batch

    t0 = time.perf_counter()
    rows = draw_batch(items, limits=limits)
    seconds = time.perf_counter() - t0
    assert all(r["status"] == "ok" for r in rows)
    return seconds / len(items)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recordings", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)

    from spikelab.jobs import RecordingLimits
    from spikelab.report.jobs import FigureItem
    from spikelab.workflow.export import ExportItem
    from spikelab.workflow.targets import Target

    limits = RecordingLimits(job_mem_mb=2000)
    with tempfile.TemporaryDirectory(prefix="spikelab-bench-isolation-") as tmp:
        root = Path(tmp)
        sources = make_small_recordings(root / "in", args.recordings)
        print(
            f"{args.recordings} small recordings (8-50 units, 10 s), median of {args.repeats}, "
            "ms per recording"
        )
        print(f"{'job':<14} {'in-process':>11} {'isolated':>9} {'cost':>7}")
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
            run(None), run(limits)  # warm-up: imports, page cache
            plain, isolated = [], []
            for _ in range(args.repeats):
                plain.append(run(None))
                isolated.append(run(limits))
            a, b = statistics.median(plain) * 1e3, statistics.median(isolated) * 1e3
            print(f"{name:<14} {a:>11.2f} {b:>9.2f} {b - a:>7.2f}", flush=True)


if __name__ == "__main__":
    main()
