"""Exporter benchmark: time and peak RSS of every exporter against its I/O floor.

Usage::

    .venv/bin/python bench/bench_exporters.py [--runs 5] [--units 1000] [--seconds 600]

Generates (once, with a fixed seed) a large recording like users' pickles: 1000 units, 600 s,
about 10 million spikes with lognormal rates. Then, for each exporter and style, runs the export
in a fresh process and, in another fresh process, the *floor*: ``np.save`` of exactly the arrays
that format holds (computed before the clock starts). Both processes load the pickle first; the
clock covers only the export (or the save). Peak RSS is the child's ``ru_maxrss``. Prints a
table of medians over ``--runs`` runs, with the ratio export / floor.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
FS_HZ = 20000.0
CASES = {
    # name: (exporter call, floor arrays)
    "ragged": "hdf5 ragged",
    "group": "hdf5 group",
    "paired": "hdf5 paired",
    "raster 10 ms": "hdf5 raster 10",
    "raster 1 ms": "hdf5 raster 1",
    "nwb": "nwb",
    "kilosort": "kilosort",
    "pickle": "pickle",
}


def make_recording(path: Path, n_units: int, seconds: float, seed: int = 20261123) -> None:
    """Write a SpikeData pickle: ``n_units`` units, ``seconds`` s, lognormal rates (~16.7 Hz)."""
    from spikelab.spikedata import SpikeData

    rng = np.random.default_rng(seed)
    sigma = 1.0
    rates = rng.lognormal(np.log(16.7) - sigma**2 / 2, sigma, n_units)
    length_ms = seconds * 1000.0
    train = [np.sort(rng.uniform(0, length_ms, rng.poisson(r * seconds))) for r in rates]
    attrs = [
        {"electrode": i, "location": [float(i % 32) * 20.0, float(i // 32) * 20.0]}
        for i in range(n_units)
    ]
    sd = SpikeData(
        train,
        length=length_ms,
        neuron_attributes=attrs,
        metadata={"fs_Hz": FS_HZ, "seed": seed},
    )
    with open(path, "wb") as fh:
        pickle.dump(sd, fh, protocol=pickle.HIGHEST_PROTOCOL)


def large_recording(workdir: Path, n_units: int, seconds: float) -> Path:
    """The benchmark recording's pickle in ``workdir``, generated on first use."""
    workdir.mkdir(parents=True, exist_ok=True)
    pkl = workdir / f"large_{n_units}u_{int(seconds)}s.pkl"
    if not pkl.exists():
        t0 = time.perf_counter()
        make_recording(pkl, n_units, seconds)
        print(
            f"generated {pkl.name} ({pkl.stat().st_size / 1e6:.0f} MB) in "
            f"{time.perf_counter() - t0:.1f} s"
        )
    return pkl


def _floor_arrays(sd, case: str) -> list[np.ndarray]:
    """The arrays the format holds, as the exporter would write them."""
    counts = np.array([t.size for t in sd.train])
    flat = np.concatenate(sd.train)
    if case in ("ragged", "nwb"):
        return [flat / 1000.0, np.cumsum(counts)]
    if case == "group":
        return [t / 1000.0 for t in sd.train]
    if case == "paired":
        return [np.repeat(np.arange(sd.N), counts), flat]
    if case == "kilosort":
        samples = np.rint(flat * (FS_HZ / 1000.0)).astype(np.int64)
        order = np.argsort(samples, kind="stable")
        clusters = np.repeat(np.arange(sd.N, dtype=np.int32), counts)[order]
        return [samples[order], clusters, clusters.copy(), np.ones(flat.size)]
    if case == "pickle":
        return [flat]
    if case.startswith("raster"):
        # The floor of a compressed raster is writing its non-zero (unit, bin, count) triplets.
        bin_ms = float(case.split()[1])
        rows, cols, vals, _ = sd.sparse_raster(bin_ms)
        return [rows.astype(np.int32), cols.astype(np.int32), vals.astype(np.uint16)]
    raise KeyError(case)


def _export(sd, case: str, out: Path) -> None:
    from spikelab.data_loaders import data_exporters as ex

    if case in ("ragged", "group", "paired"):
        ex.export_spikedata_to_hdf5(sd, out / "x.h5", style=case)
    elif case.startswith("raster"):
        ex.export_spikedata_to_hdf5(
            sd, out / "x.h5", style="raster", raster_bin_size_ms=float(case.split()[1])
        )
    elif case == "nwb":
        ex.export_spikedata_to_nwb(sd, out / "x.nwb")
    elif case == "kilosort":
        ex.export_spikedata_to_kilosort(sd, out / "ks", fs_Hz=FS_HZ)
    elif case == "pickle":
        ex.export_to_pickle(sd, out / "x.pkl")
    else:
        raise KeyError(case)


def child(mode: str, case: str, pickle_path: str, out: str) -> None:
    """Run in a fresh process: load, then time the export or the floor; print JSON."""
    import resource

    from spikelab.data_loaders.pickle_io import load_spikedata_from_pickle

    sd = load_spikedata_from_pickle(pickle_path)
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    outdir = Path(out)
    if mode == "floor":
        arrays = _floor_arrays(sd, case)
        t0 = time.perf_counter()
        for i, a in enumerate(arrays):
            np.save(outdir / f"a{i}.npy", a)
        seconds = time.perf_counter() - t0
    else:
        t0 = time.perf_counter()
        _export(sd, case, outdir)
        seconds = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in outdir.rglob("*") if p.is_file())
    print(json.dumps({"seconds": seconds, "rss_loaded_mb": rss_loaded, "bytes": size}))


def _run_with_rusage(argv: list[str]) -> tuple[str, float]:
    """Run ``argv``; return its stdout and the peak RSS (MB) of that child alone."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(argv[-4:-2])} failed with exit code {proc.returncode}")
    return stdout, usage.ru_maxrss / 1024


def measure(mode: str, case: str, pickle_path: Path) -> dict:
    os.sync()  # start every measurement with no dirty pages from the previous one
    with tempfile.TemporaryDirectory(prefix="bench-", dir=pickle_path.parent) as out:
        argv = [sys.executable, __file__, "--child", mode, case, str(pickle_path), out]
        stdout, rss = _run_with_rusage(argv)
    result = json.loads(stdout.strip().splitlines()[-1])
    result["rss_mb"] = rss
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--units", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=600.0)
    ap.add_argument("--cases", nargs="*", default=list(CASES))
    ap.add_argument("--workdir", type=Path, default=HERE / "out")
    args = ap.parse_args()
    pkl = large_recording(args.workdir, args.units, args.seconds)
    print(
        f"recording: {pkl} ({pkl.stat().st_size / 1e6:.0f} MB); median of {args.runs} runs; "
        f"{os.cpu_count()} cores"
    )
    header = (
        f"{'format':<14}{'export s':>10}{'floor s':>10}{'ratio':>8}{'RSS MB':>9}"
        f"{'floor RSS':>11}{'loaded':>9}{'file MB':>9}"
    )
    print(header)
    print("-" * len(header))
    for case in args.cases:
        exp, flo = [], []
        for _ in range(args.runs):
            exp.append(measure("export", case, pkl))
            flo.append(measure("floor", case, pkl))
        e = statistics.median(r["seconds"] for r in exp)
        f = statistics.median(r["seconds"] for r in flo)
        print(
            f"{case:<14}{e:>10.3f}{f:>10.3f}{e / f:>8.2f}"
            f"{statistics.median(r['rss_mb'] for r in exp):>9.0f}"
            f"{statistics.median(r['rss_mb'] for r in flo):>11.0f}"
            f"{statistics.median(r['rss_loaded_mb'] for r in exp):>9.0f}"
            f"{exp[0]['bytes'] / 1e6:>9.1f}",
            flush=True,
        )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:6])
    else:
        main()
