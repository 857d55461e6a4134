"""End-to-end tests: run Snakemake for real on copies of the workflow in temporary folders."""

from __future__ import annotations

import contextlib
import json
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
from spikelab.workflow.inputs import Recording, discover_recordings
from spikelab.workflow.stale import find_stale
from spikelab.workflow.summary import read_summary
from spikelab.workflow.targets import declared_outputs, targets_from_config
from spikelab.workflow.verify import compare_spikedata

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


def per_batch_jobs(*batches: str, targets=RULE_TARGETS, figures=True, sources=None) -> Counter:
    """The jobs of the batches with keys ``batches`` (a source list, an export job per target,
    which also verifies, and a figure job), and the summary jobs. The source list is re-made
    with the figures unless ``sources`` says otherwise (an option changed: neither)."""
    jobs = Counter({"summary": 1, "check": 1, "all": 1, "report_table": 1})
    for key in batches:
        jobs[f"sources__{key}"] += int(figures if sources is None else sources)
        jobs[f"report_figures__{key}"] += int(figures)
        for t in targets:
            jobs[f"export_{t}__{key}"] += 1
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
def test_dry_run_lists_a_sources_list_and_an_export_job_per_target_and_batch(workflow_dir):
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


def _declared(wd: Path) -> set[str]:
    """Every output path the rules declare for the config of ``wd``, from the library."""
    from snakemake.utils import validate

    config = yaml.safe_load((wd / "config.yaml").read_text())
    validate(config, str(wd / "schemas" / "config.schema.yaml"))  # fills in the defaults
    with contextlib.chdir(wd):
        recordings = discover_recordings(config["inputs"])
    batches = plan_batches(recordings, config["batch_size"])
    return declared_outputs(
        [r.name for r in recordings], [b.key for b in batches], targets_from_config(config)
    )


def test_a_run_writes_exactly_the_outputs_the_library_declares(finished):
    """The listing of stale outputs cannot drift from the rules: a full run writes every
    declared path, and nothing else, in results/."""
    declared = _declared(finished)
    assert all((finished / p).exists() for p in declared)
    with contextlib.chdir(finished):
        assert find_stale("results", declared) == []
    folders = {p for p in declared if (finished / p).is_dir()}  # KiloSort's
    assert folders == {f"results/kilosort/{r}" for r in RECORDINGS}
    written = {
        str(p.relative_to(finished))
        for p in (finished / "results").rglob("*")
        if p.is_file() and not any(str(p.relative_to(finished)).startswith(f) for f in folders)
    }
    assert written == declared - folders


def test_switching_the_input_folder_leaves_stale_outputs_that_clean_stale_removes(
    finished, tmp_path
):
    wd = clone(finished, tmp_path / "wf")
    (wd / "other").mkdir()
    shutil.copy(wd / "example" / "recordings" / "small.pkl", wd / "other" / "new_one.pkl")
    set_config(wd, inputs={"directory": "other", "glob": None, "sample_sheet": None})
    old = [f"results/{t}/{r}" for t in ("nwb", "pickle") for r in RECORDINGS]
    _list_and_clean_stale(wd, [p + (".nwb" if "nwb" in p else ".pkl") for p in old])
    left = {str(p.relative_to(wd)) for p in (wd / "results").rglob("*") if p.is_file()}
    assert left == {
        "results/summary.tsv",
        "results/verified.ok",
        "results/report/recordings.tsv",
        "results/report/recordings.html",
    }


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
    for r in rows:  # one bin, plus the 4 ulp allowed at the recording's largest time
        if r["target"] == "hdf5/raster":
            assert 2.0 < float(r["tolerance_ms"]) < 2.0 + 1e-9, r


def test_one_file_target_builds_only_its_own_job(workflow_dir):
    set_config(workflow_dir, batch_size=1)
    smk(workflow_dir, "results/nwb/small.nwb")
    files = {str(p.relative_to(workflow_dir)) for p in workflow_dir.rglob("results/**/*")}
    key = batch_key(["small"])  # the job also verifies the file, from the batch's source list
    assert {f for f in files if "." in Path(f).name} == {
        "results/nwb/small.nwb",
        f"results/verify/nwb/{key}.json",
        f"results/sources/{key}.tsv",
    }


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


def test_a_job_of_more_than_128_outputs_reruns_on_params_code_and_mtime_changes(tmp_path):
    # rules/common.smk sizes Snakemake's cache of metadata records to the largest job (it holds
    # 128 records, fewer than a 140-recording batch's outputs): every rerun trigger still fires
    wd = copy_workflow(tmp_path / "wf")
    for i in range(140):
        shutil.copy(
            REPO / "example" / "recordings" / "small.pkl",
            wd / "example" / "recordings" / f"rec{i:03d}.pkl",
        )
    use_directory_input(wd)
    set_config(wd, batch_size=1000, formats=["pickle"], isolation__enabled=False)
    smk(wd)
    names = sorted(p.stem for p in (wd / "example" / "recordings").glob("*.pkl"))
    (batch,) = plan_batches([Recording(n, n) for n in names], 1000)
    assert len(batch.names) + 1 > 128  # the export job's outputs: one per recording, the JSON
    assert planned_jobs(wd) == Counter()
    rerun_export = per_batch_jobs(batch.key, targets=["pickle"], figures=False, sources=False)
    set_config(wd, pickle__protocol=4)  # params
    assert planned_jobs(wd) == rerun_export
    set_config(wd, pickle__protocol=None)  # back to what the records say
    assert planned_jobs(wd) == Counter()
    later = time.time() + 5
    os.utime(wd / "scripts" / "export.py", (later, later))  # code
    assert planned_jobs(wd) == rerun_export
    os.utime(wd / "scripts" / "export.py", (later - 3600, later - 3600))
    assert planned_jobs(wd) == Counter()
    edit_recording(wd / "example" / "recordings" / "rec139.pkl")  # an input's content and mtime
    assert planned_jobs(wd) == per_batch_jobs(batch.key, targets=["pickle"])


def _starts_a_batch(name: str, batch_size: int) -> bool:
    """True when ``name`` is a natural batch boundary (it starts a batch wherever it sorts)."""
    first = Recording("", "")  # sorts before every name
    return len(plan_batches([first, Recording(name, name)], batch_size)) == 2


def _plan(folder: Path, batch_size: int):
    return plan_batches([Recording(p.stem, p.stem) for p in folder.glob("*.pkl")], batch_size)


def test_a_changed_set_of_inputs_of_a_batch_of_more_than_128_outputs_reruns_only_that_batch(
    tmp_path,
):
    # Snakemake's record cache is sized to the largest job (spikelab/workflow/persistence.py).
    # A batch of 141 recordings (142 outputs per export and figure job) and a small batch; a
    # recording added to the big batch, then one removed from it, then that one put back: each
    # time the big batch re-runs, the small one does not, the new recording is converted and
    # verified, and the removed one's outputs are listed as stale, not kept as current.
    size = 50  # forced cut at 4 x 50 = 200 names: the big batch is one natural chunk
    big = [n for n in (f"rec{i:03d}" for i in range(200)) if not _starts_a_batch(n, size)]
    big = big[:141]
    (boundary,) = [n for n in (f"zz{i:03d}" for i in range(1000)) if _starts_a_batch(n, size)][:1]
    small = [
        boundary,
        *[n for n in (f"{boundary}_{i}" for i in range(50)) if not _starts_a_batch(n, size)][:2],
    ]
    added = next(n for n in (f"rec070_{i}" for i in range(50)) if not _starts_a_batch(n, size))
    removed = big[100]

    wd = copy_workflow(tmp_path / "wf", example=False)
    data = wd / "many"
    data.mkdir()
    source = REPO / "example" / "recordings" / "small.pkl"
    for name in [*big, *small]:
        shutil.copy(source, data / f"{name}.pkl")
    set_config(
        wd,
        inputs={"directory": "many", "glob": None, "sample_sheet": None},
        fs_Hz=20000.0,
        batch_size=size,
        formats=["pickle"],
        isolation__enabled=False,
    )
    first, second = _plan(data, size)
    assert first.names == sorted(big) and second.names == sorted(small)
    assert len(first.names) + 1 > 128  # the export job's outputs: one per recording, the JSON
    smk(wd)
    assert planned_jobs(wd) == Counter()

    def outputs(names):
        return {f"results/pickle/{n}.pkl" for n in names} | {
            f"results/report/{n}.png" for n in names
        }

    def rerun(sources: bool = True):
        """Run again after the set changed: the changed batch's jobs re-run (its source list
        with them unless ``sources`` is False), the small batch's do not, every current
        recording verifies; return the plan, the changed batch and the terminal output."""
        plan = _plan(data, size)
        changed = plan[0]
        assert len(plan) == 2 and plan[1] == second  # the small batch is untouched
        assert planned_jobs(wd) == per_batch_jobs(changed.key, targets=["pickle"], sources=sources)
        before = mtimes(wd)
        proc = smk(wd)
        after = mtimes(wd)
        rewritten = {p for p in after if before.get(p) != after[p]}
        # every output of the changed batch was written again, none of the small batch's
        assert outputs(changed.names) <= rewritten
        assert not rewritten & outputs(second.names)
        assert {p for p in before if p not in after} == set()  # nothing deleted
        # the summary covers exactly the current recordings, each verified
        rows = read_summary(wd / "results" / "summary.tsv")
        assert sorted(r["recording"] for r in rows) == sorted([*changed.names, *second.names])
        assert {r["status"] for r in rows} == {"ok"}
        assert (wd / "results" / "verified.ok").is_file()
        doc = json.loads((wd / f"results/verify/pickle/{changed.key}.json").read_text())
        assert sorted(r["recording"] for r in doc["results"]) == changed.names
        assert planned_jobs(wd) == Counter()
        return plan, changed, proc.stdout + proc.stderr

    # (a) a recording joins the big batch
    other = REPO / "example" / "recordings" / "neg_start.pkl"
    shutil.copy(other, data / f"{added}.pkl")
    _, batch_a, out = rerun()
    assert added in batch_a.names and len(batch_a.names) == len(first.names) + 1
    written = load_spikedata_from_pickle(wd / "results" / "pickle" / f"{added}.pkl")
    assert compare_spikedata(load_spikedata_from_pickle(other), written).ok
    old = [
        f"results/report/stats/{first.key}.json",
        f"results/sources/{first.key}.tsv",
        f"results/verify/pickle/{first.key}.json",
    ]
    (line,) = _own_lines(out, "belong to no current recording")
    assert line.startswith(
        f"3 outputs belong to no current recording or target in results/: {', '.join(old)};"
    )

    # (b) a recording leaves the big batch: its outputs stay on disk, as stale outputs only
    (data / f"{removed}.pkl").unlink()
    _, batch_b, out = rerun()
    assert batch_b.names == sorted(set(batch_a.names) - {removed})
    gone = [f"results/pickle/{removed}.pkl", f"results/report/{removed}.png"]
    assert all((wd / p).is_file() for p in gone)
    stale = sorted([*gone, *old, *(p.replace(first.key, batch_a.key) for p in old)])
    (line,) = _own_lines(out, "belong to no current recording")
    assert line.startswith(  # the check names the first five (sorted) of the eight
        "8 outputs belong to no current recording or target in results/: "
        f"{', '.join(stale[:5])} and 3 more;"
    )
    table = (wd / "results" / "report" / "recordings.tsv").read_text()
    assert f"\n{removed}\t" not in table and f"\n{added}\t" in table

    # (c) it comes back: the membership of (a), whose verify JSON, numbers and source list lie
    # in results/ from run (a), while (b) rewrote the batch's other outputs. Only the records
    # of those outputs (their params and input sets, read through the enlarged cache) say that
    # the export and figure jobs must run again; the source list is the same and is kept.
    shutil.copy(source, data / f"{removed}.pkl")
    _, batch_c, out = rerun(sources=False)
    assert batch_c == batch_a
    (line,) = _own_lines(out, "belong to no current recording")
    assert line.startswith("6 outputs belong to no current recording or target in results/: ")
    stale = [*old, *(p.replace(first.key, batch_b.key) for p in old)]
    _list_and_clean_stale(wd, stale)
    assert planned_jobs(wd) == Counter()


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
def _own_lines(out: str, text: str) -> list[str]:
    """Lines of ``out`` holding ``text``, except Snakemake's own job descriptions (which list
    every input and output of a job)."""
    job_info = ("input:", "output:", "reason:", "log:")
    return [ln for ln in out.splitlines() if text in ln and not ln.lstrip().startswith(job_info)]


def test_a_corrupt_input_leaves_the_others_converted_and_verified(workflow_dir):
    (workflow_dir / "example" / "recordings" / "bad.pkl").write_bytes(b"\x80\x04\x95 truncated")
    use_directory_input(workflow_dir)
    proc = smk(workflow_dir, "--keep-going", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    # one line on the terminal names the bad file, its fault and where the details are: the
    # check's report, shown in place of Snakemake's error block for the failed check; the jobs
    # print nothing of it
    batch = batch_key([*RECORDINGS, "bad"])
    line = (
        "  example/recordings/bad.pkl (bad): export_failed in all 5 targets: LoadError: not a "
        "readable pickle (truncated or corrupt: FRAME at byte 2 declares 8386093307208561696 "
        f"bytes, more than the 2 left in the file); log: logs/export/hdf5/ragged/{batch}.log"
    )
    assert _own_lines(out, "bad") == [line], out[-3000:]
    assert not [ln for ln in out.splitlines() if ln.startswith("ERROR")]
    for noise in ("Error in rule", "CalledProcessError", "RuleException", "message: None"):
        assert noise not in out, out[-3000:]
    check_log = (workflow_dir / "logs" / "check.log").read_text()
    assert check_log == (
        "5 of 20 outputs failed, from 1 of 4 recordings (every row: results/summary.tsv):\n"
        f"{line}\n"
    )
    export_log = (workflow_dir / "logs" / "export" / "nwb" / f"{batch}.log").read_text()
    assert re.search(
        r"ERROR nwb: cannot convert bad: LoadError: example/recordings/bad\.pkl", export_log
    )
    assert "INFO wrote failure record results/nwb/bad.nwb" in export_log
    print(f"terminal: {len(out.splitlines())} lines with one bad file")
    rows = read_summary(workflow_dir / "results" / "summary.tsv")
    status = {(r["recording"], r["target"]): r["status"] for r in rows}
    assert {status[r, t] for r in RECORDINGS for t in TARGETS} == {"ok"}  # same batch as bad
    assert {status["bad", t] for t in TARGETS} == {"export_failed"}
    assert not (workflow_dir / "results" / "verified.ok").exists()
    # nothing is redone until the source changes; the check fails again, quickly, with the
    # same report, also without the profile's show-failed-logs and with --quiet rules
    assert planned_jobs(workflow_dir) == Counter({"check": 1, "all": 1})
    proc = smk(
        workflow_dir, "--workflow-profile", "none", "--cores", "1", "--quiet", "rules", check=False
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Logfile logs/check.log" not in out
    assert _own_lines(out, "bad") == [line]
    assert "Error in rule" not in out and "CalledProcessError" not in out
    # remove the bad file: the rest verifies, and its failure records are stale outputs
    (workflow_dir / "example" / "recordings" / "bad.pkl").unlink()
    proc = smk(workflow_dir)
    assert (workflow_dir / "results" / "verified.ok").is_file()
    records = {  # the stale failure records, as the check names them
        "results/hdf5/ragged/bad.h5": "results/hdf5/ragged/bad.h5",
        "results/hdf5/raster/bad.h5": "results/hdf5/raster/bad.h5",
        "results/kilosort/bad": "results/kilosort/bad/",
        "results/nwb/bad.nwb": "results/nwb/bad.nwb",
        "results/pickle/bad.pkl": "results/pickle/bad.pkl",
    }
    listed = ", ".join(f"{shown} (failure record)" for shown in records.values())
    (stale,) = _own_lines(proc.stdout + proc.stderr, "belong to no current recording")
    assert stale.startswith(
        f"13 outputs belong to no current recording or target in results/: {listed} and 8 "
        "more; list: "
    )
    assert stale.endswith("snakemake clean_stale")
    assert stale in (workflow_dir / "logs" / "check.log").read_text()
    _list_and_clean_stale(workflow_dir, list(records))
    assert planned_jobs(workflow_dir) == Counter()  # only stale outputs went


def _list_and_clean_stale(wd: Path, must_go: list[str]) -> None:
    """list_stale lists (and removes nothing), clean_stale removes exactly that."""
    before = mtimes(wd)
    listing = smk(wd, "list_stale")
    listed = [
        ln.split("stale: ", 1)[1]
        for ln in (listing.stdout + listing.stderr).splitlines()
        if "INFO stale: " in ln
    ]
    assert mtimes(wd) == before  # a dry run
    paths = [e.split(" (")[0].rstrip("/") for e in listed]
    assert set(must_go) <= set(paths)
    clean = smk(wd, "clean_stale")
    removed = [
        ln.split("removed ", 1)[1]
        for ln in (clean.stdout + clean.stderr).splitlines()
        if "INFO removed results/" in ln
    ]
    assert removed == listed
    after = mtimes(wd)
    gone = {p for p in before if p not in after}
    assert {p for p in gone if not any(p == q or p.startswith(q + "/") for q in paths)} == set()
    for p in paths:
        assert not os.path.lexists(wd / p)
    assert all(after[p] == before[p] for p in after)  # nothing else touched
    assert "0 outputs in results/" in (smk(wd, "list_stale").stderr)


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
