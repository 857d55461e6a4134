"""Figure benchmark: time to draw a recording's overview figure, and the PNG's size.

Usage::

    .venv/bin/python bench/bench_figures.py [--runs 5] [--units 1000] [--seconds 600]
        [--small 100] [--repeats 3] [--small-only]

Small recordings first: ms per figure before issue #16 (``figures_before.py``: a new figure per
recording, ``savefig``), after its first round (one figure per process, layouts and glyphs
kept, a quick PNG writer: the code of now with ``agg.LEARN_LAYOUT``, ``agg.BLEND_TEXT``,
``agg.STAMP_MARKERS``, ``agg.KEEP_FONT_HEIGHTS``, ``figures.QUICK_DRAW`` and
``figures.QUICK_AXIS`` off) and now (text laid out from learnt pairs, black text blended by
table, spines replayed, unchanged limits not set again, the raster's markers stamped by table,
font heights kept, a new axis drawn without matplotlib's repeats; round tops of the rate axis
in both), side by side in this run,
alternating, median of ``--repeats`` passes over ``--small`` distinct recordings (CPU and wall
time of the drawing and writing, recordings already loaded; matplotlib's cache of text sizes is
emptied before each pass, as every recording of a job is new):

- 8 units, ~1400 spikes, 10 s, as the example "small": every recording with the same layout
  (the target: <= 10 ms);
- 8-50 units, 10 s: the first pass of a fresh process (each new number of units draws its unit
  axis once), and a second pass (all layouts seen);
- the figure job (``draw_batch``: loading included) with each recording in a forked child;
- a new unit axis (8-50 units) drawn by matplotlib as it is (``agg.KEEP_FONT_HEIGHTS`` and
  ``figures.QUICK_AXIS`` off) and quickly (on), and the figure that draws it, alternating.

Then (unless ``--small-only``) a large recording, generated once with bench_exporters.py's fixed
seed: 1000 units, 600 s, about 10 million spikes, drawn as a binned rate image. Loads it with the
safe loader, then draws its figure: the first draw in this fresh process (it imports matplotlib,
as a report job does) and ``--runs`` more (median). A second case draws the largest recording
still drawn one tick per spike (200 units, 50 000 spikes). The targets: under 5 s and under
1 MB for the 10-million-spike recording.
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
from bench_workflow import make_small_recordings  # noqa: E402

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


def small_recording(seed: int, n_units: int = 8, rate_Hz: float = 17.5, seconds: float = 10.0):
    """A recording like the example "small": 8 units at 17.5 Hz for 10 s (~1400 spikes)."""
    from spikelab.spikedata import SpikeData

    rng = np.random.default_rng(seed)
    length = seconds * 1000.0
    train = [
        np.sort(rng.uniform(0, length, rng.poisson(rate_Hz * seconds))) for _ in range(n_units)
    ]
    return SpikeData(train, length=length)


def _round1(on: bool) -> None:
    """Turn what issue #16's later rounds added off (``on=True``: the first round's drawing,
    the same pixels) or on again."""
    from spikelab.report import agg, figures

    agg.LEARN_LAYOUT = agg.BLEND_TEXT = agg.STAMP_MARKERS = figures.QUICK_DRAW = not on
    _quick_axis(not on)


def _quick_axis(on: bool) -> None:
    """Turn the quick drawing of a new axis (font heights kept, repeats skipped) on or off."""
    from spikelab.report import agg, figures

    agg.KEEP_FONT_HEIGHTS = figures.QUICK_AXIS = on


def bench_unit_axes(repeats: int, tmp: Path) -> None:
    """ms to draw a new unit axis (8-50 units), and CPU ms of a figure that draws one, with
    the quick axis drawing off and on, alternating in this run (glyphs and pairs known)."""
    from spikelab.report import figures

    recordings = {n: small_recording(seed=n, n_units=n) for n in range(8, 51)}
    figures.draw_recording_figure(recordings[8], "warm", tmp / "warm.png")
    overview = figures._overview(10.0, 6.0, 100.0)
    axis, draw = overview.ax.yaxis, type(overview.ax.yaxis).draw
    took: list[float] = []

    def timed(self, renderer):
        t0 = time.perf_counter()
        draw(self, renderer)
        if self is axis:
            took.append(time.perf_counter() - t0)

    sides: dict[bool, tuple[list, list]] = {False: ([], []), True: ([], [])}
    type(axis).draw = timed
    try:
        for rep in range(repeats + 1):  # the first pass warms both sides up
            for n, sd in recordings.items():
                for on in (False, True) if (n + rep) % 2 else (True, False):
                    _quick_axis(on)
                    overview.unit_axes.clear()
                    took.clear()
                    cpu = time.process_time()
                    figures.draw_recording_figure(sd, "r", tmp / "r.png")
                    if rep:
                        sides[on][0].append(took[0] * 1e3)
                        sides[on][1].append((time.process_time() - cpu) * 1e3)
    finally:
        type(axis).draw = draw
        _quick_axis(True)
    (axis_off, fig_off), (axis_on, fig_on) = sides[False], sides[True]
    med = statistics.median
    print(
        f"new unit axis, 8-50 units (median of {len(axis_on)}): axis.draw {med(axis_off):.2f} "
        f"-> {med(axis_on):.2f} ms ({med(axis_off) / med(axis_on):.2f}x); the figure drawing "
        f"it {med(fig_off):.2f} -> {med(fig_on):.2f} ms CPU"
    )


def _pass(draw, recordings, out: Path) -> tuple[float, float]:
    """(CPU ms, wall ms) per figure of drawing every recording once with ``draw``."""
    import matplotlib.text

    for metrics in matplotlib.text._get_text_metrics_function.__defaults__[0].values():
        metrics.cache_clear()  # each recording's titles are new to the job drawing it
    cpu, wall = time.process_time(), time.perf_counter()
    for name, sd in recordings:
        draw(sd, name, out / f"{name}.png")
    n = len(recordings)
    return (time.process_time() - cpu) * 1e3 / n, (time.perf_counter() - wall) * 1e3 / n


def _row(label: str, *sides: list) -> None:
    cells = [[statistics.median(v) for v in zip(*side, strict=True)] for side in sides]
    text = "".join(f"{cpu:>9.1f}{wall:>9.1f}" for cpu, wall in cells)
    print(f"{label:<36}{text}{cells[1][0] / cells[2][0]:>8.2f}", flush=True)


def bench_small(n: int, repeats: int, tmp: Path) -> None:
    """Before/round 1/now ms per small figure, side by side (see the module's docstring)."""
    import logging

    from figures_before import draw_recording_figure as before

    from spikelab.formats.pickle_io import load_spikedata_from_pickle
    from spikelab.jobs import RecordingLimits
    from spikelab.report import agg, figures
    from spikelab.report.jobs import FigureItem, draw_batch

    after = figures.draw_recording_figure

    def round1(*args, **kwargs):
        _round1(True)
        try:
            return after(*args, **kwargs)
        finally:
            _round1(False)

    logging.disable(logging.CRITICAL)
    same = [(f"small{i:03d}", small_recording(seed=i)) for i in range(n)]
    mixed_paths = make_small_recordings(tmp / "mixed", n, seed=11)
    mixed = [(p.stem, load_spikedata_from_pickle(p)) for p in mixed_paths]
    spikes = statistics.median(sd.n_spikes for _, sd in same)
    print(
        f"{n} small recordings per case (8 units: median {spikes:.0f} spikes), ms per figure, "
        f"median of {repeats} alternating passes; {os.cpu_count()} cores, load "
        f"{os.getloadavg()[0]:.1f}"
    )
    print(
        f"{'case':<36}{'before #16':>18}{'round 1':>18}{'now':>18}{'CPU':>8}\n"
        f"{'':<36}{'CPU':>9}{'wall':>9}{'CPU':>9}{'wall':>9}{'CPU':>9}{'wall':>9}{'r1/now':>8}"
    )
    print("-" * 98)
    out = tmp / "png"
    out.mkdir()
    for draw in (before, round1, after):  # imports, first figure, pairs learnt
        _pass(draw, same[:3], out)
    cases = {"same": same, "first": mixed, "again": mixed}
    runs = {k: ([], [], []) for k in cases}
    for _ in range(repeats):
        for case, recordings in cases.items():
            for side, draw in zip(runs[case], (before, round1, after), strict=True):
                if case == "first":  # a fresh process's state: no layout kept or learnt
                    figures._OVERVIEWS.clear()
                    agg._layouts.clear()
                side.append(_pass(draw, recordings, out))
    _row("8 units, 10 s (one layout)", *runs["same"])
    _row("8-50 units, 10 s, first pass", *runs["first"])
    _row("8-50 units, 10 s, layouts kept", *runs["again"])

    items = [FigureItem(p.stem, str(p), str(tmp / "job" / f"{p.stem}.png")) for p in mixed_paths]
    limits = RecordingLimits(job_mem_mb=2000)
    job: tuple[list, list, list] = ([], [], [])
    for _ in range(repeats):
        for side, draw in zip(job, (before, round1, after), strict=True):
            figures.draw_recording_figure = draw  # what draw_batch imports when it runs
            try:
                t0 = time.perf_counter()
                rows = draw_batch(items, limits=limits)
                side.append((time.perf_counter() - t0) * 1e3 / len(items))
            finally:
                figures.draw_recording_figure = after
            assert all(r["status"] == "ok" for r in rows), rows[:3]
    walls = "".join(f"{'':>9}{statistics.median(side):>9.1f}" for side in job)
    print(f"{'figure job, 8-50 units':<36}{walls}  (wall; loading, a worker)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--units", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=600.0)
    ap.add_argument("--workdir", type=Path, default=HERE / "out")
    ap.add_argument("--small", type=int, default=100, help="small recordings per case")
    ap.add_argument("--repeats", type=int, default=3, help="passes over the small recordings")
    ap.add_argument("--small-only", action="store_true", help="skip the large recording")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-figures-small-") as tmp:
        bench_small(args.small, args.repeats, Path(tmp))
    with tempfile.TemporaryDirectory(prefix="bench-figures-axes-") as tmp:
        bench_unit_axes(args.repeats, Path(tmp))
    if args.small_only:
        return
    print()
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
