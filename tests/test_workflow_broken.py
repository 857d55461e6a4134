"""Hostile and broken inputs through the whole workflow: nothing executes, nothing is
half-written, nothing is lost.

One Snakemake run (``--keep-going``) converts the corpus of tests/broken_corpus.py (hostile,
broken and awkward-but-valid pickles side by side) and every case is then checked against the
summary, the check rule's log and the run's output. Config faults are checked with dry runs
(they stop the run at parse time), filesystem faults and a SIGKILL of the whole run with small
runs of their own.
"""

from __future__ import annotations

import base64
import contextlib
import math
import os
import random
import re
import resource
import signal
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from broken_corpus import BY_NAME, CASES, FS, good, sentinels, write_corpus
from conftest import BIN, copy_workflow, run_snakemake

from spikelab.formats.pickle_io import export_to_pickle
from spikelab.spikedata import SpikeData
from spikelab.workflow.batches import batch_key
from spikelab.workflow.config_check import check_config
from spikelab.workflow.summary import read_summary
from spikelab.workflow.targets import selected_targets, targets_from_config
from spikelab.workflow.verify import verify_recording

TARGETS = ("hdf5/ragged", "hdf5/raster", "kilosort", "nwb", "pickle")
CHECK = "results/verified.ok"  # the check rule's output: exports, verification, summary, check
FAKE_SECRETS = {
    "AWS_ACCESS_KEY_ID": "AKIAFAKESPIKELAB7Q2X",
    "AWS_SECRET_ACCESS_KEY": "fAkEsEcReT/spikelab+DoNotLeak/0123456789abcdefXYZ",
    "AWS_SESSION_TOKEN": "FakeSessionTokenSpikelab//DoNotLeak//9876543210",
    "SNAKEMAKE_STORAGE_S3_ACCESS_KEY": "AKIAFAKESTORAGE3W9PL",
    "SNAKEMAKE_STORAGE_S3_SECRET_KEY": "sToRaGeSeCrEt/spikelab+DoNotLeak/abcdef0123456789",
}

pytestmark = pytest.mark.slow


def smk(wd: Path, *args: str, env: dict | None = None, **popen) -> subprocess.CompletedProcess:
    return run_snakemake(wd, *args, extra_env=env, **popen)


def configure(wd: Path, **top_level) -> None:
    """Set top-level config keys (whole blocks) in the copy's config.yaml."""
    path = wd / "config.yaml"
    config = yaml.safe_load(path.read_text())
    config.update(top_level)
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def local_inputs(directory: str) -> dict:
    return {"directory": directory, "glob": None, "sample_sheet": None}


def summary_rows(wd: Path) -> dict[tuple[str, str], dict[str, str]]:
    return {(r["recording"], r["target"]): r for r in read_summary(wd / "results" / "summary.tsv")}


def reverify(wd: Path, recordings, *, default_fs_Hz=None) -> dict[tuple[str, str], dict]:
    """Read every selected output back and compare it with its source, outside Snakemake."""
    config = _with_defaults(yaml.safe_load((wd / "config.yaml").read_text()))
    results = {}
    for target in selected_targets(config, targets_from_config(config)):
        for name, source in recordings.items():
            if not (wd / target.output(name)).exists():
                results[name, target.name] = {"status": "missing"}
                continue
            with contextlib.chdir(wd):
                results[name, target.name] = verify_recording(
                    target, name, str(source), target.output(name), default_fs_Hz=default_fs_Hz
                )
    return results


def _with_defaults(config: dict) -> dict:
    config = dict(config)
    check_config(config, Path(__file__).parent.parent / "schemas" / "config.schema.yaml")
    return config


def stray_temporaries(wd: Path) -> list[str]:
    return sorted(
        str(p.relative_to(wd))
        for p in (wd / "results").rglob(".*")
        if p.name.endswith((".tmp", ".old"))
    )


# ============================================================== the corpus, in one run
@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory):
    """The whole corpus converted by one run with --keep-going, fake keys in the environment."""
    root = tmp_path_factory.mktemp("corpus")
    wd = copy_workflow(root / "wf", example=False)
    sentinel_dir = root / "sentinels"
    paths = write_corpus(wd / "corpus", sentinel_dir)
    configure(wd, inputs=local_inputs("corpus"), fs_Hz=None, on_bad_recording="continue")
    # the importlib payload's module, before the caller's PYTHONPATH (a worktree's spikelab)
    pythonpath = os.pathsep.join(filter(None, [str(sentinel_dir), os.environ.get("PYTHONPATH")]))
    env = {**FAKE_SECRETS, "PYTHONPATH": pythonpath}
    t0 = time.perf_counter()
    proc = smk(wd, CHECK, "--keep-going", "--cores", "2", env=env)
    seconds = time.perf_counter() - t0
    return {
        "wd": wd,
        "proc": proc,
        "out": proc.stdout + proc.stderr,
        "rows": summary_rows(wd),
        "check_log": (wd / "logs" / "check.log").read_text(),
        "sentinel_dir": sentinel_dir,
        "paths": paths,
        "seconds": seconds,
    }


def _hits(targets: str, target: str, n_targets: int) -> bool:
    """True when the check's ``targets`` text ("all 5 targets", "nwb, kilosort") names
    ``target``."""
    return targets == f"all {n_targets} targets" or target in targets.split(", ")


def _expected_failures(case) -> set[str]:
    return set(TARGETS) if case.load is not None else set(case.export)


def test_corpus_has_at_least_30_broken_and_hostile_cases():
    assert sum(not c.valid for c in CASES) >= 30
    assert len({c.name for c in CASES}) == len(CASES)


def test_corpus_run_fails_only_at_the_check_listing_every_bad_output(corpus_run):
    assert corpus_run["proc"].returncode != 0
    out = corpus_run["out"]
    n_bad = sum(len(_expected_failures(c)) for c in CASES)
    assert f"{n_bad} of {len(CASES) * len(TARGETS)} outputs failed" in corpus_run["check_log"]
    # only the check failed, and the terminal shows its report instead of Snakemake's error
    # block and exception for it (the export jobs' errors would still be shown)
    assert re.findall(r"Error in rule (\w+):", out) == [], out[-3000:]
    for noise in ("CalledProcessError", "RuleException", "message: None", "check.py"):
        assert noise not in out, noise
    report = corpus_run["check_log"].strip()
    assert out.count(report) == 1
    assert "At least one job did not complete successfully." in out
    assert not (corpus_run["wd"] / "results" / "verified.ok").exists()


@pytest.mark.parametrize("name", [c.name for c in CASES])
def test_each_corpus_case_gives_its_outcome(corpus_run, name):
    case = BY_NAME[name]
    wd, rows = corpus_run["wd"], corpus_run["rows"]
    source = f"corpus/{name}.pkl"
    failing = _expected_failures(case)
    for target in TARGETS:
        row = rows[name, target]
        if target not in failing:
            assert row["status"] == "ok", row
            assert row["n_units"] != "" and row["output_bytes"] != ""
            continue
        fault = case.load if case.load is not None else case.export[target]
        # one clear error, naming the file and the fault, in the summary and the check's list
        assert row["status"] == "export_failed", row
        assert source in row["message"] and fault in row["message"], row["message"]
        if case.unsafe:
            assert f"'{case.unsafe}'" in row["message"]
            assert "UnsafePickleError" in row["message"]
        prefix = f"  {source} ({name}): export_failed in "
        listed = [
            line
            for line in corpus_run["check_log"].splitlines()
            if line.startswith(prefix)
            and _hits(line[len(prefix) :].split(": ", 1)[0], target, len(TARGETS))
        ]
        assert len(listed) == 1 and fault in listed[0], listed
        # the same line on the terminal (the check's report, in place of Snakemake's error
        # block), no other line there names the fault; the export job's log has it too
        assert corpus_run["out"].count(listed[0]) == 1
        assert not re.search(rf"ERROR .*{re.escape(source)}", corpus_run["out"])
        export_logs = "".join(
            p.read_text() for p in (wd / "logs" / "export" / target).glob("*.log")
        )
        assert re.search(
            rf"ERROR {re.escape(target)}: cannot convert {re.escape(name)}: .*{re.escape(source)}",
            export_logs,
        )
    if case.valid:  # real files, not stubs, for every target
        assert (wd / "results" / "kilosort" / name / "spike_times.npy").is_file()
        assert (wd / "results" / "nwb" / f"{name}.nwb").read_bytes()[:8] == b"\x89HDF\r\n\x1a\n"


def test_no_hostile_payload_ran(corpus_run):
    assert sentinels(corpus_run["sentinel_dir"]) == []
    assert "Traceback" not in "".join(
        p.read_text() for p in (corpus_run["wd"] / "logs" / "export").rglob("*.log")
    )


def test_the_ten_million_spike_unit_converts_and_verifies_in_every_format(corpus_run):
    rows = corpus_run["rows"]
    for target in TARGETS:
        assert rows["ten_million_spikes", target]["n_spikes"] == "10000002"
        assert rows["ten_million_spikes", target]["status"] == "ok"
    print(f"corpus run: {corpus_run['seconds']:.1f} s")


def _secret_forms() -> list[str]:
    forms = []
    for value in FAKE_SECRETS.values():
        forms += [value, base64.b64encode(value.encode()).decode(), repr(value)[1:-1]]
    return forms


def _grep_secrets(texts: dict[str, bytes]) -> list[str]:
    return [
        f"{where}: {form[:12]}..."
        for where, data in texts.items()
        for form in _secret_forms()
        if form.encode() in data
    ]


def _written_files(wd: Path) -> dict[str, bytes]:
    skip = ("corpus", "scripts", "rules", "schemas", "envs", "profiles", "report")
    return {
        str(p.relative_to(wd)): p.read_bytes()
        for p in wd.rglob("*")
        if p.is_file() and p.relative_to(wd).parts[0] not in skip
    }


def test_no_credential_reaches_config_params_logs_outputs_or_messages(corpus_run):
    wd = corpus_run["wd"]
    files = _written_files(wd)
    assert any(k.startswith(".snakemake/metadata") for k in files)  # params are recorded there
    assert any(k.startswith("results/") for k in files) and any(
        k.startswith("logs/") for k in files
    )
    texts = {**files, "stdout+stderr": corpus_run["out"].encode()}
    assert _grep_secrets(texts) == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_s3_failures_name_the_url_never_the_keys(tmp_path):
    wd = copy_workflow(tmp_path / "wf", example=False)
    (wd / "in").mkdir()
    export_to_pickle(good(), wd / "in" / "rec.pkl")
    dead = f"http://127.0.0.1:{_free_port()}"
    configure(wd, inputs=local_inputs("in"), formats=["pickle"])
    upload = smk(
        wd,
        CHECK,
        "--cores",
        "1",
        "--default-storage-provider",
        "s3",
        "--default-storage-prefix",
        "s3://spikelab-bucket/run1",
        env={**FAKE_SECRETS, "SNAKEMAKE_STORAGE_S3_ENDPOINT_URL": dead},
    )
    assert upload.returncode != 0
    out = upload.stdout + upload.stderr
    assert "--default-storage-prefix s3://spikelab-bucket/run1: cannot reach S3" in out, out[-3000:]
    # an S3 input prefix is listed at parse time: the error names the URL, not the keys
    configure(
        wd, inputs={"directory": "s3://spikelab-bucket/in/", "glob": None, "sample_sheet": None}
    )
    listing = smk(wd, "-n", env={**FAKE_SECRETS, "AWS_ENDPOINT_URL": dead})
    assert listing.returncode != 0
    assert "s3://spikelab-bucket/in/" in listing.stdout + listing.stderr
    texts = {
        **_written_files(wd),
        "upload run": out.encode(),
        "listing run": (listing.stdout + listing.stderr).encode(),
    }
    assert _grep_secrets(texts) == []


# ================================================================ faults of the config
CONFIG_FAULTS = {  # case: (top-level change, what the error must name)
    "unknown hdf5 style": (
        {"hdf5": {"ragged": {"style": "dense"}}},
        ["'dense' is not one of", "style"],
    ),
    "raster bin size 0": (
        {"hdf5": {"r": {"style": "raster", "raster_bin_size_ms": 0}}},
        ["raster_bin_size_ms"],
    ),
    "raster bin size negative": (
        {"hdf5": {"r": {"style": "raster", "raster_bin_size_ms": -1.0}}},
        ["raster_bin_size_ms"],
    ),
    "raster bin size NaN": (
        {"hdf5": {"r": {"style": "raster", "raster_bin_size_ms": math.nan}}},
        ["hdf5.r.raster_bin_size_ms"],
    ),
    "raster bin size inf": (
        {"hdf5": {"r": {"style": "raster", "raster_bin_size_ms": math.inf}}},
        ["hdf5.r.raster_bin_size_ms"],
    ),
    "raster bin size missing": (
        {"hdf5": {"r": {"style": "raster"}}},
        ["hdf5.r.raster_bin_size_ms"],
    ),
    "fs_Hz zero": ({"fs_Hz": 0}, ["fs_Hz"]),
    "fs_Hz negative": ({"fs_Hz": -20000.0}, ["fs_Hz"]),
    "fs_Hz NaN": ({"fs_Hz": math.nan}, ["config key fs_Hz"]),
    "fs_Hz inf": ({"fs_Hz": math.inf}, ["config key fs_Hz"]),
    "fs_Hz not a number": ({"fs_Hz": "fast"}, ["fs_Hz"]),
    "batch_size zero": ({"batch_size": 0}, ["batch_size"]),
    "trusted_pickles not a boolean": ({"trusted_pickles": "yes"}, ["trusted_pickles"]),
    "allow_globals not module.name": ({"allow_globals": ["os system"]}, ["allow_globals"]),
}
DRY_RUN_FAULTS = (  # also through a real `snakemake -n` (2 s each)
    "unknown hdf5 style",
    "raster bin size 0",
    "raster bin size NaN",
    "fs_Hz negative",
    "fs_Hz NaN",
    "allow_globals not module.name",
)


@pytest.mark.parametrize("case", list(CONFIG_FAULTS))
def test_a_config_fault_is_rejected_at_start_naming_the_key(case):
    """What the Snakefile does at parse time: the config check, then the targets."""
    from spikelab.workflow import WorkflowConfigError

    change, named = CONFIG_FAULTS[case]
    repo = Path(__file__).parent.parent
    config = yaml.safe_load((repo / "config.yaml").read_text())
    config.update(change)
    with pytest.raises(WorkflowConfigError) as err:
        check_config(config, repo / "schemas" / "config.schema.yaml")
        targets_from_config(config)
    for text in named:
        assert text in str(err.value)


@pytest.mark.parametrize("case", DRY_RUN_FAULTS)
def test_a_config_fault_stops_snakemake_before_any_job(tmp_path, case):
    wd = copy_workflow(tmp_path / "wf", example=False)
    (wd / "in").mkdir()
    export_to_pickle(good(), wd / "in" / "rec.pkl")
    change, named = CONFIG_FAULTS[case]
    configure(wd, inputs=local_inputs("in"), **change)
    proc = smk(wd, "-n")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Job stats" not in out and not (wd / "results").exists()
    for text in named:
        assert text in out, out[-2000:]


def test_bad_recording_names_and_sheet_sampling_rates_are_rejected_at_start(tmp_path):
    wd = copy_workflow(tmp_path / "wf", example=False)
    (wd / "in").mkdir()
    export_to_pickle(good(), wd / "in" / "rec.pkl")
    rows = [
        ("good", "in/rec.pkl", ""),
        ("../x", "in/rec.pkl", ""),
        ("a/b", "in/rec.pkl", ""),
        ("/etc/passwd", "in/rec.pkl", ""),
        ("..", "in/rec.pkl", ""),
        ("a\\b", "in/rec.pkl", ""),
        ("-rf", "in/rec.pkl", ""),
        ("zero_fs", "in/rec.pkl", "0"),
        ("negative_fs", "in/rec.pkl", "-30000"),
    ]
    sheet = "recording\tpath\tfs_Hz\n" + "".join(f"{n}\t{p}\t{f}\n" for n, p, f in rows)
    (wd / "samples.tsv").write_text(sheet)
    configure(wd, inputs={"directory": None, "glob": None, "sample_sheet": "samples.tsv"})
    proc = smk(wd, "-n")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Job stats" not in out
    assert "line 9: fs_Hz '0' must be a sampling rate > 0 Hz" in out
    assert "line 10: fs_Hz '-30000' must be a sampling rate > 0 Hz" in out
    # the sheet's fs_Hz problems come first; fix them and the names are next
    (wd / "samples.tsv").write_text(sheet.replace("\t0\n", "\t\n").replace("\t-30000\n", "\t\n"))
    proc = smk(wd, "-n")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Job stats" not in out
    for bad in ("'../x'", "'a/b'", "'/etc/passwd'", "'..'", "'a\\\\b'", "'-rf'"):
        assert f"recording name {bad}" in out, (bad, out[-2000:])
    assert "recording name 'good'" not in out
    assert not (wd / "results").exists() and not (tmp_path / "x").exists()


# ============================================================ faults of the filesystem
SMALL = ("rec_a", "rec_b", "rec_c")
SMALL_BATCH = batch_key(SMALL)  # their one batch under the default batch_size


def _small_workflow(tmp_path: Path, names=SMALL, **config) -> Path:
    wd = copy_workflow(tmp_path / "wf", example=False)
    (wd / "in").mkdir()
    for i, name in enumerate(names):
        export_to_pickle(good(i), wd / "in" / f"{name}.pkl")
    configure(wd, inputs=local_inputs("in"), fs_Hz=None, **config)
    return wd


@contextlib.contextmanager
def read_only(folder: Path):
    """Make ``folder`` unwritable (chmod, and chattr +i when running as root)."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o555)
    immutable = False
    probe = folder / ".probe"
    try:
        try:
            probe.touch()
        except PermissionError:
            pass
        else:
            probe.unlink()
            chattr = subprocess.run(["chattr", "+i", str(folder)], capture_output=True)
            if chattr.returncode != 0:
                pytest.skip("cannot make a folder read-only here (root without chattr)")
            immutable = True
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)


def _verify_json_ok(wd: Path, target: str) -> bool:
    import json

    docs = [json.loads(p.read_text()) for p in (wd / "results" / "verify" / target).glob("*.json")]
    return bool(docs) and all(d["ok"] for d in docs)


def test_a_read_only_output_folder_fails_its_jobs_and_the_others_verify(tmp_path):
    wd = _small_workflow(tmp_path)
    with read_only(wd / "results" / "nwb"):
        proc = smk(wd, CHECK, "--keep-going", "--cores", "2")
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0
        assert re.search(r"(Permission denied|Operation not permitted).*results/nwb", out), out[
            -3000:
        ]
        assert set(re.findall(r"Error in rule (\w+):", out)) == {f"export_nwb__{SMALL_BATCH}"}
        assert list((wd / "results" / "nwb").iterdir()) == []
        for target in ("hdf5/ragged", "hdf5/raster", "kilosort", "pickle"):
            assert _verify_json_ok(wd, target), target
    proc = smk(wd, CHECK, "--cores", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (wd / CHECK).is_file() and stray_temporaries(wd) == []


def _limit_file_size(limit: int):
    def preexec():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    return preexec


FSIZE_FORMATS = ["hdf5", "kilosort", "pickle"]  # NWB writes through h5py too, and is slower


def test_a_full_disk_fails_the_jobs_cleanly_and_a_rerun_completes(tmp_path):
    wd = _small_workflow(tmp_path, names=("rec_a",), batch_size=1, formats=FSIZE_FORMATS)
    rng = np.random.default_rng(5)
    big = SpikeData(
        [np.sort(rng.uniform(0, 60_000.0, 150_000)) for _ in range(2)],
        length=60_000.0,
        metadata={"fs_Hz": FS},
    )
    export_to_pickle(big, wd / "in" / "big.pkl")  # 2.4 MB; every output of it > 1 MB
    proc = smk(wd, CHECK, "--keep-going", "--cores", "2", preexec_fn=_limit_file_size(1 << 20))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert re.search(r"File too large|file write failed|is the disk full", out), out[-3000:]
    failed = set(re.findall(r"Error in rule (\w+):", out))
    big_batch = batch_key(["big"])
    assert failed and all(r.startswith("export_") and r.endswith(f"__{big_batch}") for r in failed)
    assert "recording 'big'" in out  # the failure names the recording being converted
    # nothing half-written: no temporaries, and whatever is at a final path reads back whole
    assert stray_temporaries(wd) == []
    sources = {n: wd / "in" / f"{n}.pkl" for n in ("rec_a", "big")}
    for (name, _target), result in reverify(wd, sources).items():
        assert result["status"] in ({"ok", "missing"} if name == "big" else {"ok"}), result
    proc = smk(wd, CHECK, "--cores", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {r["status"] for r in summary_rows(wd).values()} == {"ok"}


def test_a_file_where_a_kilosort_folder_goes_is_replaced_by_the_folder(tmp_path):
    wd = _small_workflow(tmp_path, formats=["kilosort"])
    (wd / "results" / "kilosort").mkdir(parents=True)
    (wd / "results" / "kilosort" / "rec_a").write_text("not a folder")
    proc = smk(wd, CHECK, "--cores", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (wd / "results" / "kilosort" / "rec_a" / "spike_times.npy").is_file()


def test_a_folder_where_an_output_file_goes_fails_its_job_and_is_kept(tmp_path):
    wd = _small_workflow(tmp_path, formats=["nwb", "pickle"])
    in_the_way = wd / "results" / "nwb" / "rec_b.nwb"
    in_the_way.mkdir(parents=True)
    (in_the_way / "notes.txt").write_text("somebody's notes")
    proc = smk(wd, CHECK, "--keep-going", "--cores", "2")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "results/nwb/rec_b.nwb: a directory is in the way of the output file" in out
    assert set(re.findall(r"Error in rule (\w+):", out)) == {f"export_nwb__{SMALL_BATCH}"}
    assert (in_the_way / "notes.txt").read_text() == "somebody's notes"  # not deleted
    assert _verify_json_ok(wd, "pickle")
    (in_the_way / "notes.txt").unlink()
    in_the_way.rmdir()
    proc = smk(wd, CHECK, "--cores", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]


# ================================================================ a SIGKILL mid-run
def _any_file(folder: Path) -> bool:
    return folder.is_dir() and any(p.is_file() for p in folder.rglob("*"))


def _live_members(pgid: int) -> list[int]:
    """Processes of process group ``pgid`` that are not zombies."""
    live = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                live.append(int(stat.parent.name))
    return live


def test_a_run_killed_mid_way_and_restarted_ends_with_every_output_verified(tmp_path):
    wd = copy_workflow(tmp_path / "wf", example=False)
    (wd / "in").mkdir()
    rng = np.random.default_rng(11)
    sources = {}
    for i in range(6):
        train = [np.sort(rng.uniform(0, 120_000.0, 40_000)) for _ in range(5)]
        sd = SpikeData(train, length=120_000.0, metadata={"fs_Hz": FS})
        sources[f"rec{i:02d}"] = export_to_pickle(sd, wd / "in" / f"rec{i:02d}.pkl")
    configure(wd, inputs=local_inputs("in"), fs_Hz=None)  # one batch: 5 export jobs
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.Popen(
        [str(BIN / "snakemake"), CHECK, "--cores", "2"],
        cwd=wd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the jobs die with it
    )
    deadline = time.monotonic() + 60
    while not _any_file(wd / "results") and time.monotonic() < deadline:
        time.sleep(0.05)  # wait until outputs are being written
    time.sleep(random.Random(4).uniform(0.2, 1.0))
    assert proc.poll() is None, "the run finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert any((wd / ".snakemake" / "incomplete").iterdir()), "killed between jobs, not in one"
    deadline = time.monotonic() + 10
    while _live_members(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _live_members(proc.pid) == [], "processes of the killed run are still alive"
    assert not (wd / CHECK).exists()
    unlock = smk(wd, "--unlock")
    assert unlock.returncode == 0, unlock.stderr
    rerun = smk(wd, CHECK, "--cores", "2", "--rerun-incomplete")
    assert rerun.returncode == 0, (rerun.stdout + rerun.stderr)[-3000:]
    assert (wd / CHECK).is_file() and stray_temporaries(wd) == []
    results = reverify(wd, sources)
    assert {(n, t) for n, t in results} == {(n, t) for n in sources for t in TARGETS}
    assert {r["status"] for r in results.values()} == {"ok"}
    assert {r["status"] for r in summary_rows(wd).values()} == {"ok"}


# ============================================================ trusting a refused pickle
def test_allow_globals_and_trusted_pickles_convert_a_refused_pickle(tmp_path):
    from collections import Counter

    wd = _small_workflow(tmp_path, names=("plain",), formats=["pickle", "hdf5"])
    sd = SpikeData([[1.0, 2.0]], length=3.0, metadata={"fs_Hz": FS, "counts": Counter(a=1)})
    export_to_pickle(sd, wd / "in" / "custom.pkl")
    proc = smk(wd, CHECK, "--cores", "2")
    assert proc.returncode != 0
    rows = summary_rows(wd)
    assert rows["custom", "pickle"]["status"] == "export_failed"
    assert "'collections.Counter'" in rows["custom", "pickle"]["message"]
    configure(wd, allow_globals=["collections.Counter"])
    proc = smk(wd, CHECK, "--cores", "2")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert {r["status"] for r in summary_rows(wd).values()} == {"ok"}
    configure(wd, allow_globals=[], trusted_pickles=True)
    proc = smk(wd, CHECK, "--cores", "2")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    log = wd / "logs" / "export" / "pickle" / f"{batch_key(['custom', 'plain'])}.log"
    assert "trusted_pickles" in log.read_text()
