"""End-to-end tests: run Snakemake for real on copies of the workflow in temporary folders."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from conftest import BIN, REPO, copy_workflow, run_snakemake

from spikelab.formats.pickle_io import export_to_pickle, load_spikedata_from_pickle
from spikelab.workflow.batches import batch_key, plan_batches
from spikelab.workflow.inputs import Recording
from spikelab.workflow.summary import read_summary

RECORDINGS = ("empty_units", "neg_start", "small")
TARGETS = ("hdf5/ragged", "hdf5/raster", "kilosort", "nwb", "pickle")
RULE_TARGETS = ("hdf5_ragged", "hdf5_raster", "kilosort", "nwb", "pickle")

pytestmark = pytest.mark.slow


def smk(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run_snakemake(workdir, *args, check=check)


def planned_jobs(workdir: Path, *args: str) -> Counter:
    """Rule name -> job count of a dry run (empty when there is nothing to do)."""
    proc = smk(workdir, "-n", *args)
    out = proc.stdout + proc.stderr
    if "Nothing to be done" in out:
        return Counter()
    table = out.split("Job stats:", 1)[1].split("total", 1)[0]
    return Counter(
        {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, flags=re.MULTILINE)}
    )


def set_config(workdir: Path, **changes) -> None:
    path = workdir / "config.yaml"
    config = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        node = config
        *parents, key = dotted.split("__")
        for p in parents:
            node = node[p]
        node[key] = value
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def use_directory_input(workdir: Path) -> None:
    """Read every *.pkl of example/recordings (instead of the shipped sample sheet)."""
    set_config(
        workdir,
        inputs={"directory": "example/recordings", "glob": None, "sample_sheet": None},
        fs_Hz=20000.0,
    )


def per_batch_jobs(*batches: str, targets=RULE_TARGETS, figures=True) -> Counter:
    """The jobs of the batches with keys ``batches``, and the summary jobs."""
    jobs = Counter({"summary": 1, "check": 1, "all": 1, "report_table": 1})
    for key in batches:
        jobs[f"report_figures__{key}"] += int(figures)
        for t in targets:
            jobs[f"export_{t}__{key}"] += 1
            jobs[f"verify_{t}__{key}"] += 1
    return jobs


def alone(*names: str) -> list[str]:
    """The batch keys of ``names``, each in a batch of its own (batch_size: 1)."""
    return [batch_key([n]) for n in names]


def mtimes(root: Path) -> dict[str, int]:
    return {
        str(p.relative_to(root)): p.stat().st_mtime_ns
        for p in (root / "results").rglob("*")
        if p.is_file()
    }


def edit_recording(path: Path) -> None:
    """Rewrite a pickle with other bytes and a newer mtime (Snakemake 9 ignores a bare touch of
    a file under --max-checksum-file-size whose content did not change)."""
    sd = load_spikedata_from_pickle(path)
    export_to_pickle(sd, path, protocol=2)
    later = time.time() + 5
    os.utime(path, (later, later))


def clone(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest, symlinks=True)  # copy2 keeps mtimes; .snakemake comes along
    return dest


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """The example workflow run to completion with one job per file (batch_size: 1)."""
    wd = copy_workflow(tmp_path_factory.mktemp("finished"))
    set_config(wd, batch_size=1)
    smk(wd)
    return wd


# --------------------------------------------------------------------------- dry run
def test_dry_run_lists_an_export_and_a_verify_job_per_target_and_batch(workflow_dir):
    # default batch_size 100: the three example recordings form one batch
    assert planned_jobs(workflow_dir) == per_batch_jobs(batch_key(RECORDINGS))
    set_config(workflow_dir, batch_size=1)
    assert planned_jobs(workflow_dir) == per_batch_jobs(*alone(*RECORDINGS))
    set_config(workflow_dir, formats=["nwb"])
    assert planned_jobs(workflow_dir) == per_batch_jobs(*alone(*RECORDINGS), targets=["nwb"])


# ------------------------------------------------------------------------- full run
def test_full_run_writes_every_output_and_verifies_each(finished):
    for rec in RECORDINGS:
        for target in TARGETS:
            out = finished / "results" / target / rec
            if target == "kilosort":
                assert (out / "spike_times.npy").is_file() and (out / "params.py").is_file()
            else:
                ext = {"nwb": ".nwb", "pickle": ".pkl"}.get(target, ".h5")
                assert out.with_name(rec + ext).stat().st_size > 0
    rows = read_summary(finished / "results" / "summary.tsv")
    assert sorted((r["recording"], r["target"]) for r in rows) == sorted(
        (r, t) for r in RECORDINGS for t in TARGETS
    )
    assert {r["status"] for r in rows} == {"ok"}
    assert (finished / "results" / "verified.ok").is_file()
    (small,) = alone("small")
    log = (finished / "logs" / "export" / "nwb" / f"{small}.log").read_text()
    assert re.search(r"INFO wrote results/nwb/small\.nwb \(\d+ bytes, [\d.]+ s\)", log)
    assert (finished / "benchmarks" / "export" / "nwb" / f"{small}.tsv").is_file()


def test_second_run_has_nothing_to_do(finished):
    proc = smk(finished)
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_touching_one_input_reruns_only_that_recordings_jobs(finished, tmp_path):
    wd = clone(finished, tmp_path / "wf")
    edit_recording(wd / "example" / "recordings" / "small.pkl")
    assert planned_jobs(wd) == per_batch_jobs(*alone("small"))


def test_changing_one_format_option_reruns_only_that_format(finished, tmp_path):
    wd = clone(finished, tmp_path / "wf")
    set_config(wd, hdf5__ragged__times_unit="s")  # not a key of the ragged style: no effect
    assert planned_jobs(wd) == Counter()
    set_config(wd, nwb__session_description="Session of {recording}")
    assert planned_jobs(wd) == per_batch_jobs(*alone(*RECORDINGS), targets=["nwb"], figures=False)
    set_config(wd, hdf5__raster__raster_bin_size_ms=2.0)
    assert planned_jobs(wd) == per_batch_jobs(
        *alone(*RECORDINGS), targets=["nwb", "hdf5_raster"], figures=False
    )
    before = mtimes(wd)
    smk(wd)
    after = mtimes(wd)
    changed = {k for k in after if before.get(k) != after[k]}
    assert {k.split("/")[1] for k in changed if k.startswith("results/")} >= {"nwb", "hdf5"}
    assert not any(k.startswith(("results/pickle", "results/kilosort")) for k in changed)
    assert not any(k.startswith("results/hdf5/ragged") for k in changed)
    rows = read_summary(wd / "results" / "summary.tsv")
    assert {r["tolerance_ms"] for r in rows if r["target"] == "hdf5/raster"} == {"2.0"}


def test_one_file_target_builds_only_its_own_job(workflow_dir):
    set_config(workflow_dir, batch_size=1)
    smk(workflow_dir, "results/nwb/small.nwb")
    files = [p for p in (workflow_dir / "results").rglob("*") if p.is_file()]
    assert files == [workflow_dir / "results" / "nwb" / "small.nwb"]


def test_touching_one_input_reruns_only_its_batch(tmp_path):
    wd = copy_workflow(tmp_path / "wf")
    names = [f"rec{i:02d}" for i in range(8)]
    for name in names:
        shutil.copy(
            REPO / "example" / "recordings" / "small.pkl",
            wd / "example" / "recordings" / f"{name}.pkl",
        )
    use_directory_input(wd)
    set_config(wd, batch_size=3, formats=["pickle", "hdf5"])
    smk(wd)
    all_names = sorted([*names, *RECORDINGS])
    batches = plan_batches([Recording(n, n) for n in all_names], 3)
    assert len(batches) > 1
    edit_recording(wd / "example" / "recordings" / f"{batches[-1].names[-1]}.pkl")
    assert planned_jobs(wd) == per_batch_jobs(
        batches[-1].key, targets=["hdf5_ragged", "hdf5_raster", "pickle"]
    )


# ------------------------------------------------------------------ errors at start
@pytest.mark.parametrize(
    "change, named",
    [
        ({"batchsize": 3}, "batchsize: unknown key (set to 3); did you mean 'batch_size'?"),
        ({"batch_size": "many"}, "batch_size"),
        ({"nwb__sesion_description": "x"}, "nwb.sesion_description: unknown key"),
        ({"hdf5__raster__style": "dense"}, "'dense' is not one of"),
        ({"formats": ["nwb", "csv"]}, "'csv' is not one of"),
        ({"hdf5__raster__raster_bin_size_ms": None}, "hdf5.raster.raster_bin_size_ms"),
        ({"inputs__glob": "*.pkl"}, "set exactly one of inputs.directory"),
    ],
)
def test_a_bad_config_stops_at_start_naming_the_key(workflow_dir, change, named):
    set_config(workflow_dir, **change)
    proc = smk(workflow_dir, "-n", check=False)
    assert proc.returncode != 0
    assert named in proc.stdout + proc.stderr
    assert "Job stats" not in proc.stdout + proc.stderr


def test_a_recording_name_with_a_path_separator_is_rejected_at_start(workflow_dir):
    sheet = workflow_dir / "samples.tsv"
    sheet.write_text(
        "recording\tpath\nsmall\texample/recordings/small.pkl\n../x\texample/recordings/neg_start.pkl\n"
    )
    set_config(
        workflow_dir, inputs={"directory": None, "glob": None, "sample_sheet": "samples.tsv"}
    )
    proc = smk(workflow_dir, "-n", check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "recording name '../x'" in out and "path separator" in out


# -------------------------------------------------------------- a corrupt recording
def test_a_corrupt_input_leaves_the_others_converted_and_verified(workflow_dir):
    (workflow_dir / "example" / "recordings" / "bad.pkl").write_bytes(b"\x80\x04\x95 truncated")
    use_directory_input(workflow_dir)
    proc = smk(workflow_dir, "--keep-going", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    # the bad file is named, with its fault, as it fails and again at the end
    assert re.search(
        r"ERROR nwb: cannot convert bad: LoadError: example/recordings/bad\.pkl: ", out
    )
    assert "5 of 20 outputs failed" in out and "nwb  bad: export_failed" in out
    rows = read_summary(workflow_dir / "results" / "summary.tsv")
    status = {(r["recording"], r["target"]): r["status"] for r in rows}
    assert {status[r, t] for r in RECORDINGS for t in TARGETS} == {"ok"}  # same batch as bad
    assert {status["bad", t] for t in TARGETS} == {"export_failed"}
    assert not (workflow_dir / "results" / "verified.ok").exists()
    # nothing is redone until the source changes; the check fails again, quickly
    assert planned_jobs(workflow_dir) == Counter({"check": 1, "all": 1})
    (workflow_dir / "example" / "recordings" / "bad.pkl").unlink()
    smk(workflow_dir)
    assert (workflow_dir / "results" / "verified.ok").is_file()


def test_on_bad_recording_fail_fails_the_whole_batch_job(workflow_dir):
    (workflow_dir / "example" / "recordings" / "bad.pkl").write_bytes(b"garbage")
    use_directory_input(workflow_dir)
    set_config(workflow_dir, on_bad_recording="fail", formats=["pickle"])
    proc = smk(workflow_dir, "--keep-going", check=False)
    assert proc.returncode != 0
    assert "1 of 4 recordings could not be converted" in proc.stdout + proc.stderr
    assert not (workflow_dir / "results" / "pickle" / "small.pkl").exists()  # removed


# ------------------------------------------------------------------------- style
def test_lint_and_snakefmt_are_clean(workflow_dir):
    proc = smk(workflow_dir, "--lint")
    assert "Congratulations, your workflow is in a good condition!" in proc.stdout + proc.stderr
    fmt = subprocess.run(
        [str(BIN / "snakefmt"), "--check", "Snakefile", "rules"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr
