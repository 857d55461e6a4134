"""Workflow benchmark: issue #16's targets, each printed beside its measured figure.

Usage::

    .venv/bin/python bench/bench_workflow.py [--recordings 1000] [--dag-recordings 10000]
                                             [--full-recordings 3000]

1. Generates ``--recordings`` small recordings (8-50 units, 10 s, fixed seed) and runs the
   workflow on them end to end (all default targets, verified, with the report figures, on
   every core), then, in the same run, a plain Python loop in one process doing the same work
   (read each pickle, write every default output, read each back and compare it, draw the
   figure), timing the NWB write and the figure of each recording. Then a no-op rerun.
2. With ``--dag-recordings`` empty files (a dry run never opens them), times ``snakemake -n``,
   and, side by side, ``snakemake -n`` of a minimal Snakefile declaring the same jobs and
   files with nothing else: Snakemake's own floor. Then (unless ``--no-noop-at-scale``) runs
   that workflow to the end with a placeholder in place of each script but the sources
   list's (it creates the job's outputs, empty), puts the scripts back, older than every
   output, and times a no-op rerun: Snakemake's metadata records are the real workflow's
   (rule, params, input, log, code, conda env; written by Snakemake, not by the scripts),
   in minutes instead of the real run's quarter of an hour. It also counts the records read
   from disk per output (one: rules/common.smk fits Snakemake's record cache to the largest
   job; with its 128 records a no-op read 3.4 per output at 10 000 recordings).
3. Runs the workflow on ``--full-recordings`` small recordings in ONE Snakemake call, then a
   no-op rerun of it (``--full-recordings 10000`` for the issue's 10 000; about 10x the time
   of step 1).

Ratios measured side by side in one run are what hold on a shared machine; the table notes
the machine's cores and load.
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
import warnings
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
    """The same conversions, read-backs, comparisons and figures as the workflow, in one
    process; (seconds, output files). Adds the NWB write and figure ms per recording (mean
    and median) to ``STEP_MS``."""
    from spikelab.data_loaders import data_exporters as ex
    from spikelab.data_loaders import data_loaders as ld
    from spikelab.formats.atomic import written_file
    from spikelab.report.figures import draw_recording_figure
    from spikelab.workflow.verify import compare_spikedata

    def check(sd, read, abs_tol=0.0, ulps=0):
        assert compare_spikedata(sd, read, abs_tol_ms=abs_tol, ulps=ulps).ok

    warnings.simplefilter("ignore")  # e.g. the NWB session start, once per file
    t0, cpu0 = time.perf_counter(), time.process_time()
    files = 0
    nwb_ms, figure_ms = [], []
    for p in pickles:
        sd = ld.load_spikedata_from_pickle(p)
        name = p.stem
        ex.export_spikedata_to_hdf5(sd, out / "ragged" / f"{name}.h5")
        check(sd, ld.load_spikedata_from_hdf5(out / "ragged" / f"{name}.h5"), ulps=2)
        ex.export_spikedata_to_hdf5(
            sd, out / "raster" / f"{name}.h5", style="raster", raster_bin_size_ms=1.0
        )
        check(sd, ld.load_spikedata_from_hdf5(out / "raster" / f"{name}.h5"), 1.0, 4)
        t = time.perf_counter()
        ex.export_spikedata_to_nwb(sd, out / "nwb" / f"{name}.nwb", fs_Hz=20000.0)
        nwb_ms.append((time.perf_counter() - t) * 1000)
        read = ld.load_spikedata_from_nwb(  # read back as the export job does: its own output
            out / "nwb" / f"{name}.nwb",
            prefer_pynwb=False,
            own_output=written_file(out / "nwb" / f"{name}.nwb"),
        )
        check(sd, read, ulps=2)
        ex.export_spikedata_to_kilosort(sd, out / "kilosort" / name, fs_Hz=20000.0)
        check(sd, ld.load_spikedata_from_kilosort(out / "kilosort" / name, 20000.0), 0.025, 4)
        ex.export_to_pickle(sd, out / "pickle" / f"{name}.pkl")
        check(sd, ld.load_spikedata_from_pickle(out / "pickle" / f"{name}.pkl"))
        t = time.perf_counter()
        draw_recording_figure(sd, name, out / "report" / f"{name}.png")
        figure_ms.append((time.perf_counter() - t) * 1000)
        files += 6
    CPU["loop"] = time.process_time() - cpu0
    # The mean is what a batch pays (a figure of a new number of units costs ~3x the median);
    # without the first recording, whose NWB write imports pynwb and figure makes the figure.
    for step, ms in (("nwb", nwb_ms), ("figure", figure_ms)):
        warm = ms[1:] or ms
        STEP_MS[step], STEP_MS[f"{step} median"] = float(np.mean(warm)), float(np.median(warm))
    return time.perf_counter() - t0, files


STEP_MS: dict[str, float] = {}


# A Snakefile with only the workflow's shape: per batch, one rule declaring the batch's
# pickles and writing a list; per format and batch, one rule taking that list and declaring
# a result file first and one file per recording; rule all requests each format's results.
FLOOR_SNAKEFILE = """
import os
names = sorted(f[:-4] for f in os.listdir("empty"))
B, FMTS = int(config["batch_size"]), config["formats"].split(",")
batches = [names[i : i + B] for i in range(0, len(names), B)]
rule all:
    input: [f"out/{f}/{b[0]}.json" for f in FMTS for b in batches]
for b in batches:
    rule:
        name: f"sources_{b[0]}"
        input: [f"empty/{n}.pkl" for n in b]
        output: f"out/sources/{b[0]}.tsv"
        shell: "touch {output}"
for f in FMTS:
    for b in batches:
        rule:
            name: f"export_{f}_{b[0]}"
            input: f"out/sources/{b[0]}.tsv"
            output: [f"out/{f}/{b[0]}.json"] + [f"out/{f}/{n}.{f}" for n in b]
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


def set_inputs(workdir: Path, folder: str, **extra) -> None:
    import yaml

    path = workdir / "config.yaml"
    config = yaml.safe_load(path.read_text())
    config["inputs"] = {"directory": folder, "glob": None, "sample_sheet": None}
    config["fs_Hz"] = 20000.0
    config.update(extra)
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def dry_run_at_scale(workdir: Path, n: int) -> tuple[float, float]:
    """``snakemake -n`` (s) with ``n`` empty recordings (a dry run never opens them), and of a
    bare Snakefile declaring the same jobs and files."""
    dag = copy_workflow(workdir / "dag")
    folder = dag / "empty"
    folder.mkdir()
    for i in range(n):
        (folder / f"rec{i:05d}.pkl").touch()
    set_inputs(dag, "empty")
    t_dry = snakemake(dag, "-n")
    # 5 outputs + 1 report figure per recording, as in the workflow's default target
    t_floor = snakemake_floor(workdir / "floor", folder, 100, 6)
    return t_dry, t_floor


# Stands in for every script but the sources list's in the no-op benchmark: creates the job's
# declared outputs, empty (a KiloSort/Phy output is a folder). Snakemake records each output's
# metadata as it does for the real script.
PLACEHOLDER_SCRIPT = """
from pathlib import Path
for p in map(Path, [*snakemake.output, *snakemake.log]):
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.suffix == "" and p.parts[:2] == ("results", "kilosort"):
        p.mkdir(exist_ok=True)
        (p / "params.py").touch()
    else:
        p.touch()
"""

# Runs Snakemake counting the metadata records its file persistence reads from disk.
COUNT_READS = """
import sys
from snakemake.persistence.file import FilePersistence
read, reads = FilePersistence._io_read, [0]
def counted(self, subject, key):
    reads[0] += subject == self._metadata_path
    return read(self, subject, key)
FilePersistence._io_read = counted
from snakemake.cli import main
try:
    main()
finally:
    print(reads[0], file=open(".metadata_reads", "w"))
"""


def noop_at_scale(dag: Path) -> tuple[float, float]:
    """No-op rerun (s) of the workflow in ``dag`` (the dry run's) finished with
    PLACEHOLDER_SCRIPT, and the metadata records read per output in it."""
    real = {p: p.read_bytes() for p in (dag / "scripts").glob("*.py") if p.name != "sources.py"}
    for path in real:
        path.write_text(PLACEHOLDER_SCRIPT)
    snakemake(dag)
    old = time.time() - 86400  # the scripts older than every output: no code change
    for path, text in real.items():
        path.write_bytes(text)
        os.utime(path, (old, old))
    t_noop = snakemake(dag)
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    subprocess.run(
        [sys.executable, "-c", COUNT_READS, "--quiet", "all"],
        cwd=dag,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    reads = int((dag / ".metadata_reads").read_text())
    records = sum(1 for p in (dag / ".snakemake" / "metadata").rglob("*") if p.is_file())
    return t_noop, reads / records  # a record per output


def row(what: str, goal: str, measured: str, met: bool | None) -> None:
    mark = "" if met is None else ("yes" if met else "NO")
    print(f"  {what:<52} {goal:>12} {measured:>18}  {mark}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recordings", type=int, default=1000)
    ap.add_argument("--dag-recordings", type=int, default=10000)
    ap.add_argument("--full-recordings", type=int, default=3000)
    ap.add_argument(
        "--noop-at-scale",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="a no-op rerun at --dag-recordings (placeholder outputs, real metadata records)",
    )
    ap.add_argument("--workdir", type=Path, default=REPO / "bench" / "out" / "workflow")
    args = ap.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    load = os.getloadavg()[0]

    wd = copy_workflow(args.workdir / "run")
    pickles = make_small_recordings(wd / "recordings", args.recordings)
    set_inputs(wd, "recordings")
    t_wf = snakemake(wd)
    cpu_wf = CPU["snakemake"]
    t_noop_small = snakemake(wd)
    t_loop, files = plain_loop(pickles, args.workdir / "loop")
    n = args.recordings

    t_dry = t_floor = t_noop_dag = None
    if args.dag_recordings:
        t_dry, t_floor = dry_run_at_scale(args.workdir, args.dag_recordings)
        if args.noop_at_scale:
            t_noop_dag, reads = noop_at_scale(args.workdir / "dag")

    t_full = t_noop = None
    if args.full_recordings:
        big = copy_workflow(args.workdir / "full")
        make_small_recordings(big / "recordings", args.full_recordings, seed=11)
        set_inputs(big, "recordings")
        t_full = snakemake(big)
        t_noop = snakemake(big)

    print(
        f"\n{os.cpu_count()} cores, load {load:.1f} at start; {n} small recordings (8-50 "
        f"units, 10 s) x (5 outputs + 1 figure) = {files} files, each output verified"
    )
    print(f"  {'target':<52} {'goal':>12} {'measured':>18}")
    row(f"{n} recordings end to end (workflow)", "<= 30 s", f"{t_wf:.1f} s", t_wf <= 30)
    ratio = t_wf / t_loop
    row("  ... / a plain one-process loop, same work", "<= 1.5x", f"{ratio:.2f}x", ratio <= 1.5)
    row("  plain loop (one process)", "", f"{t_loop:.1f} s", None)
    row("  CPU: workflow and its jobs / loop", "", f"{cpu_wf:.0f} / {CPU['loop']:.0f} s", None)
    row(f"  no-op rerun at {n}", "", f"{t_noop_small:.1f} s", None)
    row(
        "NWB write per small file (warm process)",
        "<= 10 ms",
        f"{STEP_MS['nwb']:.1f} ms mean ({STEP_MS['nwb median']:.1f} median)",
        STEP_MS["nwb"] <= 10,
    )
    row(
        "report figure per small recording",
        "<= 10 ms",
        f"{STEP_MS['figure']:.1f} ms mean ({STEP_MS['figure median']:.1f} median)",
        STEP_MS["figure"] <= 10,
    )
    if t_dry is not None:
        m = args.dag_recordings
        row(f"snakemake -n at {m}", "<= 5 s", f"{t_dry:.1f} s", t_dry <= 5)
        row("  Snakemake alone, same jobs and files", "", f"{t_floor:.1f} s", None)
    if t_noop_dag is not None:
        m = args.dag_recordings
        row(
            f"no-op rerun at {m} (placeholder outputs)",
            "<= 5 s",
            f"{t_noop_dag:.1f} s",
            t_noop_dag <= 5,
        )
        row("  metadata records read per output", "1", f"{reads:.2f}", reads < 1.05)
    if t_full is not None:
        m = args.full_recordings
        scaled = t_full / (t_wf * m / n)
        row(f"{m} recordings in one call", "completes", f"{t_full:.0f} s", True)
        row(f"  ... / ({m // n} x the {n}-recording run)", "close to 1", f"{scaled:.2f}", None)
        row(f"no-op rerun at {m}", "<= 5 s", f"{t_noop:.1f} s", t_noop <= 5)


if __name__ == "__main__":
    main()
