"""The workflow with S3 inputs and outputs, against a real S3 server (moto's, auth on) on
127.0.0.1, through Snakemake's S3 storage plugin. Credentials live only in the environment."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml
from conftest import BIN, REPO, copy_workflow, run_snakemake
from s3_server import running_s3_server

from spikelab.workflow.batches import batch_key
from spikelab.workflow.summary import read_summary

pytest.importorskip("snakemake_storage_plugin_s3", reason="needs snakemake-storage-plugin-s3")

RECORDINGS = ("empty_units", "neg_start", "small")
TARGETS = ("hdf5/ragged", "hdf5/raster", "kilosort", "nwb", "pickle")
EXTENSIONS = {"hdf5/ragged": ".h5", "hdf5/raster": ".h5", "nwb": ".nwb", "pickle": ".pkl"}
KILOSORT_FILES = ("spike_times.npy", "spike_clusters.npy", "params.py", "channel_map.npy")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def s3():
    with running_s3_server() as endpoint:
        yield endpoint


def plugin_env(s3, *, secret: str | None = None) -> dict[str, str]:
    """The environment of a run: the S3 plugin's variables only, no AWS files or AWS_* keys."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SNAKEMAKE_STORAGE_S3_"))
    }
    env.update(
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        SNAKEMAKE_STORAGE_S3_ENDPOINT_URL=s3.url,
        SNAKEMAKE_STORAGE_S3_ACCESS_KEY=s3.access_key_id,
        SNAKEMAKE_STORAGE_S3_SECRET_KEY=secret or s3.secret_access_key,
    )
    return env


def smk(workdir: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return run_snakemake(workdir, *args, env=env)


def set_inputs(workdir: Path, **inputs) -> None:
    path = workdir / "config.yaml"
    config = yaml.safe_load(path.read_text())
    config["inputs"] = {"directory": None, "glob": None, "sample_sheet": None, **inputs}
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def new_bucket(s3, *, with_examples: str | None = "in/") -> str:
    bucket = f"spk-{uuid.uuid4().hex[:12]}"
    s3.client().create_bucket(Bucket=bucket)
    if with_examples is not None:
        client = s3.client()
        for rec in RECORDINGS:
            src = REPO / "example" / "recordings" / f"{rec}.pkl"
            client.upload_file(str(src), bucket, f"{with_examples}{rec}.pkl")
    return bucket


def object_keys(s3, bucket: str, prefix: str = "") -> set[str]:
    keys: set[str] = set()
    pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    for page in pages:
        keys.update(obj["Key"] for obj in page.get("Contents", ()))
    return keys


def files_containing(root: Path, needle: str) -> list[str]:
    """Every file under ``root`` whose bytes contain ``needle``."""
    hits = []
    data = needle.encode()
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink() and data in p.read_bytes():
            hits.append(str(p.relative_to(root)))
    return hits


# ------------------------------------------------------------------------- full run
def test_full_run_reads_pickles_from_an_s3_prefix_and_writes_every_result_to_s3(s3, tmp_path):
    bucket = new_bucket(s3)
    client = s3.client()
    client.put_object(Bucket=bucket, Key="in/.hidden.pkl", Body=b"not a pickle")
    client.put_object(Bucket=bucket, Key="in/deeper/other.pkl", Body=b"not listed")
    wd = copy_workflow(tmp_path / "wf", example=False)
    set_inputs(wd, directory=f"s3://{bucket}/in/")
    out = f"s3://{bucket}/out"
    env = plugin_env(s3)
    args = ("--default-storage-provider", "s3", "--default-storage-prefix", out)
    proc = smk(wd, env, *args, "--config", "fs_Hz=20000.0")
    assert proc.returncode == 0, proc.stdout + proc.stderr

    keys = object_keys(s3, bucket, "out/")
    expected = {"out/results/summary.tsv", "out/results/verified.ok"}
    for rec in RECORDINGS:
        for target in TARGETS:
            if target == "kilosort":
                expected |= {f"out/results/kilosort/{rec}/{f}" for f in KILOSORT_FILES}
            else:
                expected.add(f"out/results/{target}/{rec}{EXTENSIONS[target]}")
            expected.add(f"out/logs/export/{target}/{batch_key(RECORDINGS)}.log")
        expected.add(f"out/results/report/{rec}.png")
    missing = expected - keys
    assert not missing, f"objects not written: {sorted(missing)}"
    assert not any(k.startswith("out/example/") for k in keys)

    summary = tmp_path / "summary.tsv"
    client.download_file(bucket, "out/results/summary.tsv", str(summary))
    rows = read_summary(summary)
    assert sorted((r["recording"], r["target"]) for r in rows) == sorted(
        (r, t) for r in RECORDINGS for t in TARGETS
    )
    assert {r["status"] for r in rows} == {"ok"}, rows
    assert {r["fs_Hz"] for r in rows if r["target"] in ("nwb", "kilosort")} == {"20000.0"}

    # A second run finds everything up to date in the bucket.
    again = smk(wd, env, *args, "--config", "fs_Hz=20000.0")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Nothing to be done" in again.stdout + again.stderr

    # The secret key is nowhere: not in the terminal output, the local files (.snakemake
    # included), or any object the run wrote.
    secret = s3.secret_access_key
    for p in (proc, again):
        assert secret not in p.stdout + p.stderr
    assert files_containing(wd, secret) == []
    for key in keys:
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert secret.encode() not in body, key


# ----------------------------------------------------------------------- sample sheet
def test_a_sample_sheet_may_list_s3_objects(s3, tmp_path):
    bucket = new_bucket(s3)
    wd = copy_workflow(tmp_path / "wf", example=False)
    sheet = wd / "sheet.tsv"
    sheet.write_text(
        "recording\tpath\tfs_Hz\n"
        + "".join(f"{r}\ts3://{bucket}/in/{r}.pkl\t30000\n" for r in RECORDINGS)
    )
    set_inputs(wd, sample_sheet="sheet.tsv")
    proc = smk(wd, plugin_env(s3), "-n")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"export_nwb__{batch_key(RECORDINGS)}" in proc.stdout

    sheet.write_text(sheet.read_text() + f"ghost\ts3://{bucket}/in/ghost.pkl\t\n")
    proc = smk(wd, plugin_env(s3), "-n")
    assert proc.returncode != 0
    assert (
        f"recording 'ghost': no such object s3://{bucket}/in/ghost.pkl" in proc.stdout + proc.stderr
    )


# ----------------------------------------------------------------------- errors at start
def test_a_missing_input_bucket_stops_the_run_at_start_naming_the_url(s3, tmp_path):
    wd = copy_workflow(tmp_path / "wf", example=False)
    set_inputs(wd, directory="s3://no-such-bucket-here/in/")
    proc = smk(wd, plugin_env(s3), "-n")
    assert proc.returncode != 0
    assert "inputs.directory s3://no-such-bucket-here/in/: the bucket" in proc.stdout + proc.stderr
    assert "does not exist" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


def test_a_missing_output_bucket_stops_the_run_at_start_instead_of_being_created(s3, tmp_path):
    bucket = new_bucket(s3)
    wd = copy_workflow(tmp_path / "wf", example=False)
    set_inputs(wd, directory=f"s3://{bucket}/in/")
    out = "s3://no-such-output-bucket/results"
    proc = smk(
        wd,
        plugin_env(s3),
        "--default-storage-provider",
        "s3",
        "--default-storage-prefix",
        out,
        "--config",
        "fs_Hz=20000.0",
    )
    assert proc.returncode != 0
    assert (
        f"--default-storage-prefix {out}: the bucket 'no-such-output-bucket'"
        in proc.stdout + proc.stderr
    )
    names = {b["Name"] for b in s3.client().list_buckets()["Buckets"]}
    assert "no-such-output-bucket" not in names


def test_wrong_credentials_stop_the_run_at_start_without_showing_the_key(s3, tmp_path):
    bucket = new_bucket(s3)
    wd = copy_workflow(tmp_path / "wf", example=False)
    set_inputs(wd, directory=f"s3://{bucket}/in/")
    wrong = "wrong" + uuid.uuid4().hex
    proc = smk(wd, plugin_env(s3, secret=wrong), "-n")
    assert proc.returncode != 0
    assert (
        f"inputs.directory s3://{bucket}/in/: access denied at {s3.url}"
        in proc.stdout + proc.stderr
    )
    assert wrong not in proc.stdout + proc.stderr
    assert files_containing(wd, wrong) == []


def test_local_inputs_stay_local_when_outputs_go_to_s3(s3, tmp_path):
    bucket = new_bucket(s3, with_examples=None)
    wd = copy_workflow(tmp_path / "wf")  # the shipped config: the example sample sheet
    out = f"s3://{bucket}/out"
    proc = smk(
        wd,
        plugin_env(s3),
        "-n",
        "--default-storage-provider",
        "s3",
        "--default-storage-prefix",
        out,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{out}/results/nwb/small.nwb" in proc.stdout
    assert "example/recordings/small.pkl" in proc.stdout
    assert f"{out}/example" not in proc.stdout
