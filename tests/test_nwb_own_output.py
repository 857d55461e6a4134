"""The read-back of an NWB output this process has just written skips the whole-file safety
check only when the caller says so and the file opened is exactly the one its writer recorded;
every other NWB file (inputs, copies, files changed or replaced since) gets the full check.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import h5py
import pytest

from spikelab.formats import atomic
from spikelab.formats.errors import LoadError
from spikelab.formats.nwb import export_spikedata_to_nwb, load_spikedata_from_nwb
from spikelab.formats.pickle_io import load_spikedata_from_pickle
from spikelab.formats.strict_hdf5 import StrictH5
from spikelab.jobs import copy_unchanged
from spikelab.workflow.export import run_export_job
from spikelab.workflow.targets import Target
from spikelab.workflow.verify import VerifyItem, verify_written

DATA = Path(__file__).parent / "data"
TARGET = Target("nwb", "nwb", {"session_start_time": "2024-05-01T10:00:00+02:00"})


@pytest.fixture
def whole_file_checks(monkeypatch) -> list[str]:
    """The sources whose whole file the NWB loader checks (the check still runs)."""
    seen: list[str] = []
    check = StrictH5.check_whole_file

    def counted(self):
        seen.append(self.source)
        return check(self)

    monkeypatch.setattr(StrictH5, "check_whole_file", counted)
    return seen


def write(path: Path, name: str = "small") -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_spikedata_to_nwb(
            load_spikedata_from_pickle(DATA / f"{name}.pkl"),
            path,
            session_start_time="2024-05-01T10:00:00+02:00",
        )
    return path


def same(a, b) -> bool:
    return (
        a.N == b.N
        and a.length == b.length
        and a.start_time == b.start_time
        and a.metadata == b.metadata
        and a.neuron_attributes == b.neuron_attributes
        and all(
            (x == y).all() and x.dtype == y.dtype for x, y in zip(a.train, b.train, strict=True)
        )
    )


def test_the_writer_records_the_file_it_put_in_place(tmp_path):
    path = write(tmp_path / "rec.nwb")
    written = atomic.written_file(path)
    assert written is not None and written.path == str(path.resolve())
    assert written.matches(os.stat(path))
    assert atomic.written_file(tmp_path / "other.nwb") is None


@pytest.mark.parametrize("prefer_pynwb", [False, True])
@pytest.mark.parametrize("name", ["small", "neg_start", "empty_units"])
def test_the_fast_read_of_our_own_output_reads_what_the_checked_read_does(
    tmp_path, whole_file_checks, name, prefer_pynwb
):
    path = write(tmp_path / f"{name}.nwb", name)
    checked = load_spikedata_from_nwb(path, prefer_pynwb=prefer_pynwb)
    assert whole_file_checks == [str(path)]
    fast = load_spikedata_from_nwb(
        path, prefer_pynwb=prefer_pynwb, own_output=atomic.written_file(path)
    )
    assert whole_file_checks == [str(path)]  # not checked again
    assert same(fast, checked)


def test_an_output_changed_in_place_after_writing_gets_the_full_check(tmp_path, whole_file_checks):
    path = write(tmp_path / "rec.nwb")
    written = atomic.written_file(path)
    with h5py.File(path, "a") as f:  # now hostile: a link outside the file
        f["acquisition/elsewhere"] = h5py.ExternalLink(str(tmp_path / "secret.h5"), "/x")
    assert not written.matches(os.stat(path))
    with pytest.raises(LoadError, match="external link"):
        load_spikedata_from_nwb(path, prefer_pynwb=False, own_output=written)
    assert whole_file_checks == [str(path)]


def test_an_output_replaced_after_writing_gets_the_full_check(tmp_path, whole_file_checks):
    path = write(tmp_path / "rec.nwb")
    written = atomic.written_file(path)
    hostile = write(tmp_path / "hostile.nwb")
    with h5py.File(hostile, "a") as f:
        f["acquisition/elsewhere"] = h5py.ExternalLink(str(tmp_path / "secret.h5"), "/x")
    os.replace(hostile, path)
    with pytest.raises(LoadError, match="external link"):
        load_spikedata_from_nwb(path, prefer_pynwb=False, own_output=written)
    # A plain copy of the very output is another file too (a new inode).
    path = write(tmp_path / "again.nwb")
    written = atomic.written_file(path)
    shutil.copy(path, tmp_path / "copy.nwb")
    os.replace(tmp_path / "copy.nwb", path)
    load_spikedata_from_nwb(path, prefer_pynwb=False, own_output=written)
    assert whole_file_checks == [str(tmp_path / "rec.nwb"), str(path)]


def test_a_copy_of_an_input_is_never_recorded_as_written(tmp_path):
    path = write(tmp_path / "rec.nwb")
    assert atomic.written_file(path) is not None
    copy_unchanged(str(write(tmp_path / "input.nwb")), str(path))
    assert atomic.written_file(path) is None


def test_own_output_takes_only_a_recorded_identity(tmp_path):
    path = write(tmp_path / "rec.nwb")
    for bogus in (True, "rec.nwb", os.stat(path)):
        with pytest.raises(LoadError, match="own_output must be a WrittenFile"):
            load_spikedata_from_nwb(path, own_output=bogus)


def _verify(path: Path, **kwargs) -> dict:
    item = VerifyItem("small", str(DATA / "small.pkl"), str(path))
    src = load_spikedata_from_pickle(DATA / "small.pkl")
    return verify_written(TARGET, item, src, default_fs_Hz=None, pickle_loading=None, **kwargs)


def test_verification_skips_the_scan_only_when_told_the_output_is_fresh(
    tmp_path, whole_file_checks
):
    path = write(tmp_path / "small.nwb")
    assert _verify(path, copied=False, fresh=True)["status"] == "ok"
    assert whole_file_checks == []
    assert _verify(path, copied=False)["status"] == "ok"  # not told: full check
    assert _verify(path, copied=True, fresh=True)["status"] == "ok"  # a copy: full check
    assert whole_file_checks == [str(path)] * 2


def test_fresh_verification_of_an_output_swapped_for_a_hostile_file_refuses_it(
    tmp_path, whole_file_checks
):
    path = write(tmp_path / "small.nwb")
    hostile = write(tmp_path / "hostile.nwb")
    with h5py.File(hostile, "a") as f:
        f["acquisition/elsewhere"] = h5py.ExternalLink(str(tmp_path / "secret.h5"), "/x")
    os.replace(hostile, path)
    result = _verify(path, copied=False, fresh=True)
    assert result["status"] == "unreadable" and "external link" in result["message"]
    assert whole_file_checks == [str(path)]


@pytest.mark.parametrize("isolated", [False, True])
def test_the_export_job_verifies_its_own_fresh_output_without_the_scan(
    tmp_path, whole_file_checks, isolated
):
    out = tmp_path / "results" / "small.nwb"
    results = run_export_job(
        target=TARGET.as_params(),
        sources=[str(DATA / "small.pkl")],
        outputs=[str(out)],
        recordings=[{"recording": "small"}],
        default_fs_Hz=20000.0,
        on_bad_recording="fail",
        log_path=None,
        isolation={"enabled": isolated},
        verify_json=str(tmp_path / "verify.json"),
        batch="b",
    )
    assert results[0].verify["status"] == "ok", results[0].verify["message"]
    assert whole_file_checks == []  # in-process: none; in a worker child: none seen here
    # and what was skipped would have passed: the output read with every check
    checked = load_spikedata_from_nwb(out, prefer_pynwb=False)
    assert same(checked, load_spikedata_from_nwb(out, prefer_pynwb=True))
