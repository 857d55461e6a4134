"""Figure benchmark: time to draw a recording's overview figure, and the PNG's size.

Usage::

    .venv/bin/python bench/bench_figures.py [--runs 5] [--units 1000] [--seconds 600]

Generates (once, with bench_exporters.py's fixed seed, shared with that benchmark) a large
recording: 1000 units, 600 s, about 10 million spikes, drawn as a binned rate image. Loads it
with the safe loader, then draws its figure: the first draw in this fresh process (it imports
matplotlib, as a report job does) and ``--runs`` more (median). A second case draws the largest
recording still drawn one tick per spike (200 units, 50 000 spikes). The targets: under 5 s
and under 1 MB for the 10-million-spike recording.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_exporters import large_recording  # noqa: E402

TARGET_SECONDS = 5.0
TARGET_BYTES = 1_000_000


def tick_limit_recording(n_units: int, n_spikes: int, seconds: float, seed: int = 1):
    """The densest recording still drawn with ticks: ``n_spikes`` spikes over ``n_units``."""
    from spikelab.spikedata import SpikeData

    rng = np.random.default_rng(seed)
    owner = rng.integers(0, n_units, n_spikes)
    times = rng.uniform(0.0, seconds * 1000.0, n_spikes)
    return SpikeData([np.sort(times[owner == i]) for i in range(n_units)], length=seconds * 1e3)


def bench(sd, name: str, runs: int, out: Path) -> None:
    from spikelab.report.figures import draw_recording_figure

    png = out / f"{name}.png"
    t0 = time.perf_counter()
    first = draw_recording_figure(sd, name, png)
    first_s = time.perf_counter() - t0
    warm = []
    for _ in range(runs):
        t0 = time.perf_counter()
        res = draw_recording_figure(sd, name, png)
        warm.append(time.perf_counter() - t0)
    print(
        f"{name:<28}{sd.N:>7}{sd.n_spikes:>12,}{first.mode:>7}{first_s:>10.3f}"
        f"{statistics.median(warm):>10.3f}{res.bytes / 1e3:>10.1f}",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--units", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=600.0)
    ap.add_argument("--workdir", type=Path, default=HERE / "out")
    args = ap.parse_args()
    pkl = large_recording(args.workdir, args.units, args.seconds)
    from spikelab.formats.pickle_io import load_spikedata_from_pickle

    t0 = time.perf_counter()
    large = load_spikedata_from_pickle(pkl)
    load_s = time.perf_counter() - t0
    print(
        f"recording: {pkl} ({pkl.stat().st_size / 1e6:.0f} MB, loaded in {load_s:.2f} s); "
        f"first draw in a fresh process (imports matplotlib), then median of {args.runs}; "
        f"{os.cpu_count()} cores"
    )
    header = (
        f"{'case':<28}{'units':>7}{'spikes':>12}{'mode':>7}{'first s':>10}{'draw s':>10}"
        f"{'PNG kB':>10}"
    )
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory(prefix="bench-figures-") as tmp:
        out = Path(tmp)
        bench(large, f"large_{args.units}u_{int(args.seconds)}s", args.runs, out)
        bench(tick_limit_recording(200, 50_000, 60.0), "tick_limit_200u_50k", args.runs, out)
    print(f"targets for the large recording: under {TARGET_SECONDS:g} s, PNG under 1 MB")


if __name__ == "__main__":
    main()
