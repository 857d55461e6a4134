"""The workflow submitted to a real SLURM (the single-node cluster of tests/slurm/start.sh)
through profiles/slurm, with the export/verify/report jobs grouped into few submissions."""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import copy_workflow

from spikelab.workflow.summary import read_summary

BIN = Path(sys.executable).parent
RECORDINGS = ("empty_units", "neg_start", "small")
TARGETS = ("hdf5/ragged", "hdf5/raster", "kilosort", "nwb", "pickle")
EXTENSIONS = {"hdf5/ragged": ".h5", "hdf5/raster": ".h5", "nwb": ".nwb", "pickle": ".pkl"}
GROUP_COMPONENTS = 3  # components (export + verify of one target and batch) per submission

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def _node_state() -> tuple[str | None, str]:
    """(state of the first node, why SLURM cannot be used) from sinfo."""
    if shutil.which("sinfo") is None:
        return None, "sinfo is not installed (start the test cluster: bash tests/slurm/start.sh)"
    proc = subprocess.run(["sinfo", "-h", "-o", "%t %c"], capture_output=True, text=True)
    fields = proc.stdout.split()
    if proc.returncode != 0 or not fields:
        return None, f"sinfo failed ({proc.stderr.strip()}); run bash tests/slurm/start.sh"
    state = fields[0].rstrip("*~#")
    if state not in ("idle", "mix", "alloc", "comp"):
        return None, f"the SLURM node is {fields[0]!r}, not up; run bash tests/slurm/start.sh"
    return fields[1], ""


@pytest.fixture(scope="module")
def node_cpus() -> int:
    cpus, why = _node_state()
    if cpus is None:
        pytest.skip(why)
    pytest.importorskip("snakemake_executor_plugin_slurm", reason="needs the SLURM plugin")
    return int(cpus)


def submitted_jobs(run_id: str) -> list[dict[str, str]]:
    """SLURM jobs named ``run_id`` (the plugin names every job after its run); squeue keeps
    finished jobs for MinJobAge (300 s here)."""
    proc = subprocess.run(
        ["squeue", "--states=all", "-h", "-n", run_id, "-o", "%i|%T|%C|%m"],
        capture_output=True,
        text=True,
        check=True,
    )
    keys = ("id", "state", "cpus", "mem")
    return [dict(zip(keys, line.split("|"), strict=True)) for line in proc.stdout.splitlines()]


def test_the_slurm_profile_runs_the_workflow_in_grouped_jobs(node_cpus, tmp_path):
    wd = copy_workflow(tmp_path / "wf")
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    args = [
        str(BIN / "snakemake"),
        "--workflow-profile",
        "profiles/slurm",
        "--slurm-init-seconds-before-status-checks",
        "1",  # the profile keeps the plugin's 40 s
        "--group-components",
        f"convert={GROUP_COMPONENTS}",  # the profile's 10 would put this example in one job
    ]
    dry = subprocess.run([*args, "-n"], cwd=wd, env=env, capture_output=True, text=True)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    # one component per export job and per report-figures job (a verify joins its export's)
    table = dry.stdout.split("Job stats:", 1)[1].split("total", 1)[0]
    n_components = len(re.findall(r"^(?:export_\w+|report_figures__\w+)\s+1$", table, re.M))
    assert n_components == len(TARGETS) + 1  # the three recordings form one batch

    proc = subprocess.run(args, cwd=wd, env=env, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out

    for rec in RECORDINGS:
        for target in TARGETS:
            path = wd / "results" / target / rec
            if target == "kilosort":
                assert (path / "spike_times.npy").is_file() and (path / "params.py").is_file()
            else:
                assert path.with_name(rec + EXTENSIONS[target]).stat().st_size > 0
    rows = read_summary(wd / "results" / "summary.tsv")
    assert sorted((r["recording"], r["target"]) for r in rows) == sorted(
        (r, t) for r in RECORDINGS for t in TARGETS
    )
    assert {r["status"] for r in rows} == {"ok"}, rows
    assert (wd / "results" / "verified.ok").is_file()

    run_id = re.search(r"SLURM run ID: ([0-9a-f-]{36})", out)[1]
    jobs = submitted_jobs(run_id)
    assert len(jobs) == math.ceil(n_components / GROUP_COMPONENTS), jobs
    assert {j["state"] for j in jobs} == {"COMPLETED"}, jobs
    assert all(int(j["cpus"]) <= node_cpus for j in jobs), jobs
    assert out.count("has been submitted with SLURM jobid") == len(jobs)
