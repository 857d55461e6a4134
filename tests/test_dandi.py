"""DANDI accepts our NWB files: ``dandi organize`` files them into a dandiset folder and ``dandi
validate`` passes (pynwb validation, nwbinspector with the DANDI configuration, path layout).

Fully offline: the dandiset is a local folder whose ``dandiset.yaml`` holds a made-up
identifier, as dandi's own tests do (tests/fixtures.py there); ``DANDI_NO_ET`` turns off the
version check over the network, and dandi's logs and caches go to the test's folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from spikedata_factories import fixture, synthetic

from spikelab.formats.nwb import export_spikedata_to_nwb
from spikelab.spikedata import SpikeData

pytestmark = pytest.mark.slow
DANDI = Path(sys.executable).with_name("dandi")
#: Per recording: its SpikeData and the sample-sheet fields that DANDI needs.
WITH_SPIKES = {
    "small": (fixture("small"), {"subject_id": "mouse-01", "sex": "F", "age": "P90D"}),
    "neg_start": (fixture("neg_start"), {"subject_id": "mouse-02", "sex": "M", "age": "P120D"}),
    "many_units": (synthetic("many_units"), {"subject_id": "mouse-03", "sex": "U", "age": "P1Y"}),
}
WITHOUT_SPIKES = {
    "zero_units": (synthetic("zero_units"), {"subject_id": "mouse-04", "sex": "F", "age": "P9W"}),
    "all_units_empty": (
        SpikeData([[], []], length=10.0),
        {"subject_id": "mouse-05", "sex": "F", "age": "P9W"},
    ),
}


def dandi(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "DANDI_NO_ET": "1",  # no version check against the server
        "XDG_STATE_HOME": str(tmp_path / "state"),  # dandi's logs
        "XDG_CACHE_HOME": str(tmp_path / "cache"),  # its checksum and metadata caches
    }
    return subprocess.run([str(DANDI), *args], env=env, capture_output=True, text=True, timeout=600)


def organized_dandiset(tmp_path: Path, recordings: dict) -> Path:
    """Export each recording (no session date for one of them: the placeholder), create a
    local dandiset and ``dandi organize`` the files into it; return the dandiset folder."""
    src, dandiset = tmp_path / "results" / "nwb", tmp_path / "dandiset"
    src.mkdir(parents=True)
    dandiset.mkdir()
    (dandiset / "dandiset.yaml").write_text("identifier: '999999'\n")  # not on any server
    for i, (name, (sd, subject)) in enumerate(recordings.items()):
        start = None if i == 0 else f"2024-06-0{i}T10:00:00+00:00"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            export_spikedata_to_nwb(
                sd,
                src / f"{name}.nwb",
                fs_Hz=20000.0,
                session_start_time=start,
                species="Mus musculus",
                electrode_location="CA1",
                **subject,
            )
    done = dandi(tmp_path, "organize", "-f", "copy", "--dandiset-path", str(dandiset), str(src))
    assert done.returncode == 0, done.stdout + done.stderr
    for _, subject in recordings.values():
        sub = subject["subject_id"]
        assert len(list((dandiset / f"sub-{sub}").glob(f"sub-{sub}*.nwb"))) == 1
    # A session without session_id is named by its start: the placeholder must not leak in.
    organized = [p.name for p in dandiset.rglob("*.nwb")]
    assert not [name for name in organized if "20000101" in name], organized
    return dandiset


def validation_issues(tmp_path: Path, dandiset: Path) -> tuple[int, list[dict]]:
    done = dandi(tmp_path, "validate", "--format", "json", str(dandiset))
    return done.returncode, json.loads(done.stdout or "[]")


def test_dandi_validate_passes_on_organized_recordings(tmp_path):
    dandiset = organized_dandiset(tmp_path, WITH_SPIKES)
    returncode, issues = validation_issues(tmp_path, dandiset)
    assert [i for i in issues if i["severity"] in ("ERROR", "CRITICAL")] == []
    assert returncode == 0


def test_dandi_validate_on_recordings_without_a_spike_fails_only_on_nwbinspector_crashes(
    tmp_path,
):
    """nwbinspector 0.7.2 crashes on an empty spike_times column (see test_nwb_zero_units),
    and dandi reports the crash as an ERROR: nothing else is wrong with these files."""
    dandiset = organized_dandiset(tmp_path, WITHOUT_SPIKES)
    returncode, issues = validation_issues(tmp_path, dandiset)
    serious = {i["id"] for i in issues if i["severity"] in ("ERROR", "CRITICAL")}
    assert serious, "nwbinspector no longer crashes here: update README and this test"
    assert all(s.startswith("NWBI.During evaluation of 'check_") for s in serious), serious
    assert returncode == 1
