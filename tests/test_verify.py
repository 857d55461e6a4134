"""Verification: comparison tolerances, and real round trips through every exporter/loader."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from spikelab.data_loaders import data_exporters, data_loaders
from spikelab.formats.errors import FailureRecordError, LoadError
from spikelab.formats.pickle_io import load_spikedata_from_pickle
from spikelab.formats.registry import get_format
from spikelab.jobs import write_failure_stub
from spikelab.spikedata import SpikeData
from spikelab.workflow.targets import Target, targets_from_config
from spikelab.workflow.verify import (
    VerifyItem,
    compare_spikedata,
    verify_batch,
    verify_recording,
)

DATA = Path(__file__).parent / "data"
EXPORTERS = {
    "hdf5": data_exporters.export_spikedata_to_hdf5,
    "nwb": data_exporters.export_spikedata_to_nwb,
    "kilosort": data_exporters.export_spikedata_to_kilosort,
    "pickle": data_exporters.export_to_pickle,
}


def _sd(train, **kw):
    return SpikeData([np.asarray(t, dtype=float) for t in train], **kw)


# -------------------------------------------------------------------------- comparison
def test_identical_data_passes_with_zero_error():
    sd = _sd([[1.0, 2.5], [], [3.0]], length=10.0)
    cmp = compare_spikedata(sd, sd)
    assert cmp.ok and cmp.n_units == 3 and cmp.n_spikes == 3 and cmp.max_abs_error_ms == 0.0


def test_ms_tolerance_is_exact():
    a = _sd([[1.0, 2.5]], length=10.0)
    b = _sd([[1.0, np.nextafter(2.5, 3.0)]], length=10.0)
    cmp = compare_spikedata(a, b)
    assert not cmp.ok
    assert "unit 0: 1 spike times off" in cmp.problems[0]


def test_seconds_round_trip_is_within_the_ulp_tolerance():
    rng = np.random.default_rng(1)
    t = np.sort(rng.uniform(-500.0, 1e7, 100_000))
    a = _sd([t], start_time=-500.0, length=1e7 + 500.0)
    b = _sd([(t / 1000.0) * 1000.0], start_time=-500.0, length=1e7 + 500.0)
    cmp = compare_spikedata(a, b, ulps=2)
    assert cmp.ok and cmp.max_error_ulps <= 1.0
    c = _sd([t + 4 * np.spacing(t)], start_time=-500.0, length=1e7 + 500.0)
    assert not compare_spikedata(a, c, ulps=2).ok


def test_the_tolerance_reported_is_the_one_applied_with_its_ulps():
    """A seconds round trip is allowed 2 ulp: the reported tolerance is that bound at the
    largest time (ms), never 0 beside a nonzero error."""
    t = np.array([1.0, 2500.0, 9000.0])
    a = _sd([t], length=10_000.0)
    b = _sd([(t / 1000.0) * 1000.0 + [0, np.spacing(2500.0), 0]], length=10_000.0)
    cmp = compare_spikedata(a, b, ulps=2)
    assert cmp.ok and cmp.max_abs_error_ms == np.spacing(2500.0)
    assert cmp.tolerance_ms == 2 * np.spacing(9000.0) and cmp.abs_tol_ms == 0.0
    assert cmp.max_abs_error_ms <= cmp.tolerance_ms
    cmp = compare_spikedata(a, a, abs_tol_ms=0.025, ulps=4)  # samples: half a sample + 4 ulp
    assert cmp.tolerance_ms == 0.025 + 4 * np.spacing(9000.0)
    assert compare_spikedata(a, a).tolerance_ms == 0.0  # ms: exact
    empty = _sd([[]], length=10.0)
    assert compare_spikedata(empty, empty, abs_tol_ms=1.0, ulps=4).tolerance_ms == 1.0


def test_samples_pass_within_half_a_sample_only():
    fs = 20000.0
    a = _sd([[10.0, 20.0]], length=30.0)
    half = 500.0 / fs
    b = _sd([[10.0 + half, 20.0 - half]], length=30.0)
    assert compare_spikedata(a, b, abs_tol_ms=half, ulps=4).ok
    c = _sd([[10.0 + 1.01 * half, 20.0]], length=30.0)
    assert not compare_spikedata(a, c, abs_tol_ms=half, ulps=4).ok


def test_count_start_and_length_differences_are_each_reported():
    a = _sd([[1.0, 2.0], [3.0]], length=10.0)
    cmp = compare_spikedata(a, _sd([[1.0], [3.0], []], start_time=-1.0, length=12.0))
    assert not cmp.ok
    text = "\n".join(cmp.problems)
    assert "unit count: 3 read back, 2 in the source" in text
    assert "start_time: -1.0 ms read back, 0.0 ms" in text
    assert "length: 12.0 ms read back, 10.0 ms" in text
    assert "unit 0: 1 spikes read back, 2 in the source" in text


# ------------------------------------------------------------------ real round trips
CONFIG = {
    "hdf5": {
        "ragged_s": {"style": "ragged", "spike_times_unit": "s"},
        "ragged_samples": {"style": "ragged", "spike_times_unit": "samples"},
        "raster": {"style": "raster", "raster_bin_size_ms": 2.5},
        "group_ms": {"style": "group", "group_time_unit": "ms"},
        "paired": {"style": "paired", "times_unit": "s"},
    },
    "nwb": {"session_description": "test {recording}"},
    "kilosort": {"time_unit": "samples"},
    "pickle": {"protocol": 4},
}
TARGETS = {t.name: t for t in targets_from_config(CONFIG)}


def _export(target: Target, source: Path, out: Path, fs: float) -> None:
    sd = load_spikedata_from_pickle(source)
    EXPORTERS[target.format](sd, out, **target.exporter_kwargs(source.stem, fs))


@pytest.mark.filterwarnings("ignore:start_time is:UserWarning")
@pytest.mark.parametrize("recording", ["small", "empty_units", "neg_start"])
@pytest.mark.parametrize("name", sorted(TARGETS))
def test_every_target_round_trips_within_its_tolerance(tmp_path, name, recording):
    target = TARGETS[name]
    source = DATA / f"{recording}.pkl"
    out = tmp_path / (Path(target.output(recording)).name)
    _export(target, source, out, 20000.0)
    r = verify_recording(target, recording, str(source), str(out), default_fs_Hz=20000.0)
    assert r["status"] == "ok", r["message"]
    assert r["n_units"] == load_spikedata_from_pickle(source).N
    assert r["max_abs_error_ms"] <= r["tolerance_ms"]  # the bound applied, ulps included
    assert r["fs_Hz"] == 20000.0  # on every target, whether it uses a rate or not
    if target.time_unit == "ms":
        assert r["max_abs_error_ms"] == 0.0


def test_a_failure_stub_is_reported_as_export_failed(tmp_path):
    for name in ("nwb", "kilosort"):
        target = TARGETS[name]
        output = str(tmp_path / Path(target.output("bad")).name)
        write_failure_stub(
            output,
            is_dir=target.is_dir,
            recording="bad",
            source="in/bad.pkl",
            target=target.name,
            error="LoadError: in/bad.pkl: truncated",
        )
        r = verify_recording(target, "bad", "in/bad.pkl", output)
        assert r["status"] == "export_failed" and not r["ok"]
        assert r["message"] == "LoadError: in/bad.pkl: truncated"


LOADERS = {
    "hdf5": data_loaders.load_spikedata_from_hdf5,
    "nwb": data_loaders.load_spikedata_from_nwb,
    "kilosort": data_loaders.load_spikedata_from_kilosort,
    "pickle": data_loaders.load_spikedata_from_pickle,
}
WHAT = {
    "hdf5": "an HDF5 file",
    "nwb": "an NWB file",
    "kilosort": "a KiloSort/Phy folder",
    "pickle": "a SpikeData pickle",
}


@pytest.mark.parametrize("fmt", sorted(LOADERS))
def test_every_loader_refuses_a_failure_record_saying_what_it_is(tmp_path, fmt):
    spec = get_format(fmt)
    output = tmp_path / f"bad{spec.extension}"
    write_failure_stub(
        output,
        is_dir=spec.is_dir,
        recording="bad",
        source="in/bad.pkl",
        target=fmt,
        error="LoadError: in/bad.pkl: truncated",
    )
    expected = (
        f"{output}: this is a failure record of the {fmt} export of recording 'bad' "
        f"(in/bad.pkl), not {WHAT[fmt]}: the export failed with LoadError: in/bad.pkl: "
        "truncated. Fix or remove that source and run the workflow again"
    )
    for load in (LOADERS[fmt], spec.reader()):  # SpikeLab's path, and the registry's
        with pytest.raises(FailureRecordError) as err:
            load(str(output), fs_Hz=20000.0) if fmt == "kilosort" else load(str(output))
        assert str(err.value) == expected
        assert isinstance(err.value, LoadError)


def test_an_output_that_differs_from_its_source_is_a_mismatch(tmp_path):
    target = TARGETS["hdf5/group_ms"]
    source = DATA / "small.pkl"
    sd = load_spikedata_from_pickle(source)
    train = [t.copy() for t in sd.train]
    train[2][5] += 0.5
    altered = SpikeData(train, length=sd.length, start_time=sd.start_time)
    out = tmp_path / "small.h5"
    EXPORTERS["hdf5"](altered, out, **target.exporter_kwargs("small", None))
    r = verify_recording(target, "small", str(source), str(out))
    assert r["status"] == "mismatch"
    assert "unit 2: 1 spike times off by more than the tolerance, first at index 5" in r["message"]


def test_an_unreadable_output_is_reported_not_raised(tmp_path):
    out = tmp_path / "small.nwb"
    out.write_bytes(b"not an nwb file at all")
    r = verify_recording(TARGETS["nwb"], "small", str(DATA / "small.pkl"), str(out))
    assert r["status"] == "unreadable" and "not an NWB/HDF5 file" in r["message"]


def test_verify_batch_writes_one_json_with_a_result_per_recording(tmp_path):
    target = TARGETS["pickle"]
    items = []
    for name in ("small", "neg_start"):
        out = tmp_path / f"{name}.pkl"
        shutil.copy(DATA / f"{name}.pkl", out)
        items.append(VerifyItem(name, str(DATA / f"{name}.pkl"), str(out)))
    doc = verify_batch(target, items, str(tmp_path / "v" / "b.json"), batch="b")
    on_disk = json.loads((tmp_path / "v" / "b.json").read_text())
    assert on_disk == doc
    assert doc["ok"] and [r["recording"] for r in doc["results"]] == ["small", "neg_start"]
