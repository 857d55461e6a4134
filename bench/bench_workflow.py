"""Workflow benchmark: Snakemake's overhead per output file, and DAG time at scale.

Usage::

    .venv/bin/python bench/bench_workflow.py [--recordings 1000] [--dag-recordings 10000]

1. Generates ``--recordings`` small recordings (8-50 units, 10 s, fixed seed) and runs the
   workflow on them end to end (all default targets, verified, on every core), then, in the
   same run, a plain Python loop in one process that calls the same exporters on the same
   inputs, reads every output back (what the workflow's verify jobs do) and draws each
   recording's report figure (what its report jobs do). Prints the overhead per output file =
   (workflow time - loop time) / number of output files.
   Then times a no-op rerun of that workflow (everything up to date).
2. With ``--dag-recordings`` empty files (a dry run never opens them), times ``snakemake -n``,
   and, side by side, ``snakemake -n`` of a minimal Snakefile declaring the same batch jobs,
   inputs and outputs (each output requested once) with nothing else: Snakemake's own floor.
3. Runs the workflow to completion on ``--noop-recordings`` tiny recordings (1-4 units, 1 s)
   and times the no-op rerun at that scale (``--noop-recordings 0`` skips it). The run is
   done in chunks of 10 batches (their jobs named as targets), then once whole for the summary:
   in one piece, Snakemake 9's scheduler re-stats every input of every ready job before each
   job it starts, which at 10 000 recordings costs seconds per job (hours in total).
"""

from __future__ import annotations

import argparse
import os
import pickle
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
WORKFLOW = ("Snakefile", "rules", "scripts", "schemas", "config.yaml", "profiles", "envs", "report")


def make_small_recordings(
    folder: Path, n: int, seed: int = 7, *, units: tuple[int, int] = (8, 50), seconds: float = 10
) -> list[Path]:
    """``n`` SpikeData pickles of ``units`` (min, max) units, ``seconds`` s, lognormal rates."""
    from spikelab.spikedata import SpikeData

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    length = seconds * 1000.0
    paths = []
    for i in range(n):
        rates = rng.lognormal(np.log(5.0), 1.0, int(rng.integers(units[0], units[1] + 1)))
        train = [np.sort(rng.uniform(0, length, rng.poisson(r * seconds))) for r in rates]
        sd = SpikeData(train, length=length, metadata={"fs_Hz": 20000.0})
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
    """Run Snakemake in ``workdir``; return the wall time (s). The CPU time (s) of it and its
    jobs is added to ``CPU["snakemake"]``."""
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # jobs use the bytecode cache, as on users' machines
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(
        [str(BIN / "snakemake"), *args, "--quiet", "all"],  # "all": what --quiet hides
        cwd=workdir,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU["snakemake"] = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return seconds


CPU: dict[str, float] = {}


def plain_loop(pickles: list[Path], out: Path) -> tuple[float, int]:
    """The same conversions, read-backs and figures as the workflow, in one process;
    (seconds, output files)."""
    from spikelab.data_loaders import data_exporters as ex
    from spikelab.data_loaders import data_loaders as ld
    from spikelab.report.figures import draw_recording_figure

    t0, cpu0 = time.perf_counter(), time.process_time()
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
        draw_recording_figure(sd, name, out / "report" / f"{name}.png")
        files += 6
    CPU["loop"] = time.process_time() - cpu0
    return time.perf_counter() - t0, files


# A Snakefile with only the workflow's shape: per format and batch, one rule declaring the
# batch's pickles as inputs and one file per recording as outputs; rule all requests each.
FLOOR_SNAKEFILE = """
import os
names = sorted(f[:-4] for f in os.listdir("empty"))
B, FMTS = int(config["batch_size"]), config["formats"].split(",")
batches = [names[i : i + B] for i in range(0, len(names), B)]
rule all:
    input: [f"out/{f}/{n}.{f}" for f in FMTS for b in batches for n in b]
for f in FMTS:
    for b in batches:
        rule:
            name: f"export_{f}_{b[0]}"
            input: [f"empty/{n}.pkl" for n in b]
            output: [f"out/{f}/{n}.{f}" for n in b]
            shell: "touch {output}"
"""


def snakemake_floor(
    workdir: Path, folder: Path, batch_size: int, files_per_recording: int
) -> float:
    """``snakemake -n`` time of FLOOR_SNAKEFILE over the recordings in ``folder``."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "Snakefile").write_text(FLOOR_SNAKEFILE)
    (workdir / "empty").symlink_to(folder.resolve())
    formats = ",".join(f"f{i}" for i in range(files_per_recording))
    return snakemake(workdir, "-n", "--config", f"batch_size={batch_size}", f"formats={formats}")


def complete_in_chunks(workdir: Path, chunk: int = 10) -> tuple[float, int]:
    """Run the workflow in ``workdir`` to completion, ``chunk`` batches per Snakemake call
    (every job of those batches named as a target), then whole; (seconds, Snakemake calls)."""
    import yaml

    sys.path.insert(0, str(REPO))
    from spikelab.workflow.batches import plan_batches
    from spikelab.workflow.inputs import discover_recordings
    from spikelab.workflow.targets import targets_from_config

    config = yaml.safe_load((workdir / "config.yaml").read_text())
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        batches = plan_batches(discover_recordings(config["inputs"]), config["batch_size"])
    finally:
        os.chdir(cwd)
    rules = [t.rule_name for t in targets_from_config(config)]
    t0 = time.perf_counter()
    calls = 0
    for i in range(0, len(batches), chunk):
        keys = [b.key for b in batches[i : i + chunk]]
        jobs = [f"{kind}_{r}__{k}" for k in keys for r in rules for kind in ("export", "verify")]
        snakemake(workdir, *jobs, *(f"report_figures__{k}" for k in keys))
        calls += 1
    snakemake(workdir)
    return time.perf_counter() - t0, calls + 1


def set_inputs(workdir: Path, folder: str, **extra) -> None:
    import yaml

    path = workdir / "config.yaml"
    config = yaml.safe_load(path.read_text())
    config["inputs"] = {"directory": folder, "glob": None, "sample_sheet": None}
    config["fs_Hz"] = 20000.0
    config.update(extra)
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def dry_run_at_scale(workdir: Path, n: int) -> None:
    """Print the time of ``snakemake -n`` with ``n`` empty recordings (a dry run never opens
    them) and of a bare Snakefile declaring the same files."""
    dag = copy_workflow(workdir / "dag")
    folder = dag / "empty"
    folder.mkdir()
    for i in range(n):
        (folder / f"rec{i:05d}.pkl").touch()
    set_inputs(dag, "empty")
    t_dry = snakemake(dag, "-n")
    # 5 outputs + 1 report figure per recording, as in the workflow's default target
    t_floor = snakemake_floor(workdir / "floor", folder, 100, 6)
    print(f"{n} recordings: snakemake -n {t_dry:.1f} s")
    print(f"  Snakemake alone, same declared files (6 per recording): {t_floor:.1f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recordings", type=int, default=1000)
    ap.add_argument("--dag-recordings", type=int, default=10000)
    ap.add_argument("--noop-recordings", type=int, default=10000)
    ap.add_argument("--workdir", type=Path, default=REPO / "bench" / "out" / "workflow")
    args = ap.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    print(f"{os.cpu_count()} cores; Snakemake workflow vs a plain loop, same exporters")

    wd = copy_workflow(args.workdir / "run")
    pickles = make_small_recordings(wd / "recordings", args.recordings)
    set_inputs(wd, "recordings")
    t_wf = snakemake(wd)
    cpu_wf = CPU["snakemake"]
    t_noop_small = snakemake(wd)
    t_loop, files = plain_loop(pickles, args.workdir / "loop")
    print(f"{args.recordings} recordings x (5 outputs + 1 figure) = {files} files (+ verification)")
    print(f"  workflow   {t_wf:8.1f} s  ({cpu_wf:.1f} s CPU, Snakemake and its jobs)")
    print(f"  plain loop {t_loop:8.1f} s  ({CPU['loop']:.1f} s CPU; one process, one core)")
    print(f"  overhead per output file: {(t_wf - t_loop) / files * 1000:.1f} ms wall clock")
    print(f"  CPU overhead per output file: {(cpu_wf - CPU['loop']) / files * 1000:.1f} ms")
    print(f"  no-op rerun: {t_noop_small:.1f} s")

    if args.dag_recordings:
        dry_run_at_scale(args.workdir, args.dag_recordings)

    if args.noop_recordings:
        big = copy_workflow(args.workdir / "noop")
        make_small_recordings(big / "recordings", args.noop_recordings, units=(1, 4), seconds=1)
        set_inputs(big, "recordings")
        t_full, calls = complete_in_chunks(big)
        t_noop = snakemake(big)
        print(f"{args.noop_recordings} tiny recordings: full run {t_full:.0f} s in {calls} calls")
        print(f"  no-op rerun {t_noop:.1f} s")


if __name__ == "__main__":
    main()
