"""Exporter benchmark: time and peak RSS of every exporter against its I/O floor.

Usage::

    .venv/bin/python bench/bench_exporters.py [--runs 5] [--units 1000] [--seconds 600]

Generates (once, with a fixed seed) a large recording like users' pickles: 1000 units, 600 s,
about 10 million spikes with lognormal rates. Then, for each exporter and style, runs the export
in a fresh process and, in another fresh process, the *floor*: ``np.save`` of exactly the arrays
that format holds (computed before the clock starts). Both processes load the pickle first; the
clock covers only the export (or the save). Peak RSS is the child's ``ru_maxrss``.

The export clock includes importing what the exporter needs (spikelab's exporter modules, h5py,
pynwb: a fixed cost of every fresh process, ~0.5 s for pynwb); the ``imports s`` column shows
it alone. Children run with Python's default bytecode cache (PYTHONDONTWRITEBYTECODE is dropped
from their environment, as on users' machines; with it, every run compiles spikelab again). Export
and floor runs alternate and each ratio is taken within one export/floor pair, so slow phases
of a shared machine hit both: ``ratio`` is the median of the per-pair ratios, ``range`` their
minimum and maximum (how noisy the machine was), ``w/o imp`` the same median without imports.
Times and RSS are medians over ``--runs`` runs.
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


def _import_dependencies(case: str) -> None:
    """Import what ``_export(case)`` needs: the exporters, h5py, and pynwb for NWB."""
    from spikelab.data_loaders import data_exporters  # noqa: F401

    if case.split()[0] in ("ragged", "group", "paired", "raster", "nwb"):
        import h5py  # noqa: F401
    if case == "nwb":
        import pynwb  # noqa: F401


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

    from spikelab.formats.pickle_io import load_spikedata_from_pickle

    sd = load_spikedata_from_pickle(pickle_path)
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    outdir = Path(out)
    imports = 0.0
    if mode == "floor":
        arrays = _floor_arrays(sd, case)
        t0 = time.perf_counter()
        for i, a in enumerate(arrays):
            np.save(outdir / f"a{i}.npy", a)
        seconds = time.perf_counter() - t0
    else:
        t0 = time.perf_counter()
        _import_dependencies(case)
        imports = time.perf_counter() - t0
        _export(sd, case, outdir)
        seconds = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in outdir.rglob("*") if p.is_file())
    result = {"seconds": seconds, "imports": imports, "rss_loaded_mb": rss_loaded, "bytes": size}
    print(json.dumps(result))


def _run_with_rusage(argv: list[str]) -> tuple[str, float]:
    """Run ``argv``; return its stdout and the peak RSS (MB) of that child alone."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env)
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


def _row(case: str, exp: list[dict], flo: list[dict]) -> str:
    """One table line: medians, and ratios taken within each export/floor pair."""
    ratios = [e["seconds"] / f["seconds"] for e, f in zip(exp, flo, strict=True)]
    bare = [(e["seconds"] - e["imports"]) / f["seconds"] for e, f in zip(exp, flo, strict=True)]
    spread = f"{min(ratios):.2f}-{max(ratios):.2f}"

    def med(runs: list[dict], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    return (
        f"{case:<14}{med(exp, 'seconds'):>10.3f}{med(exp, 'imports'):>10.3f}"
        f"{med(flo, 'seconds'):>9.3f}{statistics.median(ratios):>7.2f}{spread:>15}"
        f"{statistics.median(bare):>9.2f}{med(exp, 'rss_mb'):>8.0f}{med(flo, 'rss_mb'):>10.0f}"
        f"{med(exp, 'rss_loaded_mb'):>8.0f}{exp[0]['bytes'] / 1e6:>9.1f}"
    )


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
        f"{'format':<14}{'export s':>10}{'imports s':>10}{'floor s':>9}{'ratio':>7}{'range':>15}"
        f"{'w/o imp':>9}{'RSS MB':>8}{'floor RSS':>10}{'loaded':>8}{'file MB':>9}"
    )
    print(header)
    print("-" * len(header))
    for case in args.cases:
        exp, flo = [], []
        for run in range(args.runs):  # pairs, in alternating order
            first, second = ("export", "floor")[:: 1 if run % 2 == 0 else -1]
            results = {first: measure(first, case, pkl), second: measure(second, case, pkl)}
            exp.append(results["export"])
            flo.append(results["floor"])
        print(_row(case, exp, flo), flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:6])
    else:
        main()
