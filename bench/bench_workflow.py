"""Workflow benchmark: Snakemake's overhead per output file, and DAG time at scale.

Usage::

    .venv/bin/python bench/bench_workflow.py [--recordings 1000] [--dag-recordings 10000]

1. Generates ``--recordings`` small recordings (8-50 units, 10 s, fixed seed) and runs the
   workflow on them end to end (all default targets, verified, on every core), then, in the
   same run, a plain Python loop in one process that calls the same exporters on the same
   inputs and reads every output back (what the workflow's verify jobs do). Prints the
   overhead per output file = (workflow time - loop time) / number of output files.
   Then times a no-op rerun of that workflow (everything up to date).
2. With ``--dag-recordings`` empty files (a dry run never opens them), times ``snakemake -n``.
   (A no-op rerun at that scale needs a completed run of 10 000 real recordings; not automated.)
"""

from __future__ import annotations

import argparse
import os
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
WORKFLOW = ("Snakefile", "rules", "scripts", "schemas", "config.yaml", "profiles", "envs", "report")


def make_small_recordings(folder: Path, n: int, seed: int = 7) -> list[Path]:
    """``n`` SpikeData pickles of 8-50 units, 10 s, lognormal rates."""
    from spikelab.spikedata import SpikeData

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        units = int(rng.integers(8, 51))
        rates = rng.lognormal(np.log(5.0), 1.0, units)
        train = [np.sort(rng.uniform(0, 10_000.0, rng.poisson(r * 10))) for r in rates]
        sd = SpikeData(train, length=10_000.0, metadata={"fs_Hz": 20000.0})
        path = folder / f"rec{i:05d}.pkl"
        with open(path, "wb") as fh:
            pickle.dump(sd, fh, protocol=pickle.HIGHEST_PROTOCOL)
        paths.append(path)
    return paths


def copy_workflow(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name)
        elif src.exists():
            shutil.copy2(src, dest / name)
    return dest


def snakemake(workdir: Path, *args: str) -> float:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    t0 = time.perf_counter()
    subprocess.run(
        [str(BIN / "snakemake"), "--quiet", "all", *args],
        cwd=workdir,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - t0


def plain_loop(pickles: list[Path], out: Path) -> tuple[float, int]:
    """The same conversions and read-backs as the workflow, in one process; (seconds, files)."""
    from spikelab.data_loaders import data_exporters as ex
    from spikelab.data_loaders import data_loaders as ld

    t0 = time.perf_counter()
    files = 0
    for p in pickles:
        sd = ld.load_spikedata_from_pickle(p)
        name = p.stem
        ex.export_spikedata_to_hdf5(sd, out / "ragged" / f"{name}.h5")
        ld.load_spikedata_from_hdf5(out / "ragged" / f"{name}.h5")
        ex.export_spikedata_to_hdf5(
            sd, out / "raster" / f"{name}.h5", style="raster", raster_bin_size_ms=1.0
        )
        ld.load_spikedata_from_hdf5(out / "raster" / f"{name}.h5")
        ex.export_spikedata_to_nwb(sd, out / "nwb" / f"{name}.nwb", fs_Hz=20000.0)
        ld.load_spikedata_from_nwb(out / "nwb" / f"{name}.nwb")
        ex.export_spikedata_to_kilosort(sd, out / "kilosort" / name, fs_Hz=20000.0)
        ld.load_spikedata_from_kilosort(out / "kilosort" / name, 20000.0)
        ex.export_to_pickle(sd, out / "pickle" / f"{name}.pkl")
        ld.load_spikedata_from_pickle(out / "pickle" / f"{name}.pkl")
        files += 5
    return time.perf_counter() - t0, files


def set_inputs(workdir: Path, folder: str, **extra) -> None:
    import yaml

    path = workdir / "config.yaml"
    config = yaml.safe_load(path.read_text())
    config["inputs"] = {"directory": folder, "glob": None, "sample_sheet": None}
    config["fs_Hz"] = 20000.0
    config.update(extra)
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recordings", type=int, default=1000)
    ap.add_argument("--dag-recordings", type=int, default=10000)
    ap.add_argument("--workdir", type=Path, default=REPO / "bench" / "out" / "workflow")
    args = ap.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    print(f"{os.cpu_count()} cores; Snakemake workflow vs a plain loop, same exporters")

    wd = copy_workflow(args.workdir / "run")
    pickles = make_small_recordings(wd / "recordings", args.recordings)
    set_inputs(wd, "recordings")
    t_wf = snakemake(wd)
    t_noop_small = snakemake(wd)
    t_loop, files = plain_loop(pickles, args.workdir / "loop")
    print(f"{args.recordings} recordings x 5 outputs = {files} files (+ verification)")
    print(f"  workflow   {t_wf:8.1f} s")
    print(f"  plain loop {t_loop:8.1f} s  (one process, one core)")
    print(f"  overhead per output file: {(t_wf - t_loop) / files * 1000:.1f} ms")
    print(f"  no-op rerun: {t_noop_small:.1f} s")

    dag = copy_workflow(args.workdir / "dag")
    folder = dag / "empty"
    folder.mkdir()
    for i in range(args.dag_recordings):
        (folder / f"rec{i:05d}.pkl").touch()
    set_inputs(dag, "empty")
    t_dry = snakemake(dag, "-n")
    print(f"{args.dag_recordings} recordings: snakemake -n {t_dry:.1f} s")


if __name__ == "__main__":
    main()
