"""Per-recording isolation: a child per recording, and what ends it (a crash, a memory bomb, a
hang, an exception) is that recording's fault while the rest of the batch goes on."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from spikedata_factories import DATA

from spikelab import isolation
from spikelab.data_loaders import data_exporters
from spikelab.formats.pickle_io import export_to_pickle, load_spikedata_from_pickle
from spikelab.isolation import ChildFailure, Limits, run_isolated
from spikelab.jobs import (
    EXPORTING,
    BatchError,
    EnvironmentFault,
    RecordingLimits,
    read_failure_stub,
)
from spikelab.spikedata import SpikeData
from spikelab.workflow.export import BatchExportError, ExportItem, export_batch
from spikelab.workflow.targets import Target
from spikelab.workflow.verify import VerifyItem, verify_batch

pytestmark = pytest.mark.skipif(not isolation.available(), reason="needs os.fork")


def _segfault():
    ctypes.string_at(0)


# ----------------------------------------------------------------------- run_isolated
def test_a_result_comes_back_as_json_through_encode_and_decode():
    value = run_isolated(
        lambda: {"a": [1, 2.5], "b": None},
        encode=lambda d: {**d, "c": "x"},
        decode=lambda d: sorted(d),
    )
    assert value == ["a", "b", "c"]


def test_a_segfault_is_reported_with_the_signal_and_the_phase():
    def work():
        isolation.phase("loading")
        _segfault()

    with pytest.raises(ChildFailure) as err:
        run_isolated(work)
    failure = err.value
    assert failure.kind == "signal" and failure.signal_name == "SIGSEGV"
    assert failure.describe() == "crashed with SIGSEGV while loading"
    assert not list(Path.cwd().glob("core*"))  # no core dump left behind


def test_a_memory_bomb_stops_at_the_limit_and_the_parent_is_untouched():
    rss_before = isolation.resident_mb()

    def work():
        isolation.phase("exporting")
        return len(bytearray(4 * 2**30))  # 4 GiB

    with pytest.raises(ChildFailure) as err:
        run_isolated(work, limits=Limits(memory_mb=200))
    assert err.value.kind == "memory"
    assert err.value.describe() == "ran out of memory (limit of 200 MB) while exporting"
    assert isolation.resident_mb() < rss_before + 50


def test_a_hang_is_killed_after_its_time_limit():
    def work():
        isolation.phase("drawing")
        time.sleep(60)

    t0 = time.monotonic()
    with pytest.raises(ChildFailure) as err:
        run_isolated(work, limits=Limits(seconds=0.5))
    assert time.monotonic() - t0 < 5
    assert err.value.kind == "timeout"
    assert err.value.describe() == "took longer than 0.5 s while drawing; stopped"


def test_an_exception_is_named_with_its_type_and_environment_faults_are_flagged():
    def work():
        isolation.phase(EXPORTING)
        raise OSError(28, "No space left on device")

    with pytest.raises(ChildFailure) as err:
        run_isolated(work, is_environment=lambda exc, phase: isinstance(exc, OSError))
    assert err.value.kind == "exception" and err.value.environment
    assert err.value.describe() == "OSError: [Errno 28] No space left on device"


def test_a_child_that_exits_without_a_result_is_reported():
    with pytest.raises(ChildFailure) as err:
        run_isolated(lambda: os._exit(7))
    assert err.value.kind == "no-report" and "exit status 7" in err.value.describe()


def test_a_sigkill_is_reported_as_a_crash_that_may_be_memory():
    with pytest.raises(ChildFailure) as err:
        run_isolated(lambda: os.kill(os.getpid(), signal.SIGKILL))
    assert err.value.describe().startswith("crashed with SIGKILL (out of memory?)")


# ------------------------------------------------------------------ batches, isolated
def _items(tmp_path, target, names):
    src = tmp_path / "in"
    src.mkdir(exist_ok=True)
    items = []
    for name in names:
        path = src / f"{name}.pkl"
        path.write_bytes((DATA / "small.pkl").read_bytes())
        items.append(ExportItem(name, str(path), str(tmp_path / target.output(name))))
    return items


def _misbehaving_exporter(sd, path, **kwargs):
    """Converts good recordings; crashes, hogs memory, hangs or raises on the others (chosen by
    the output's name)."""
    name = Path(path).stem
    if name == "crash":
        _segfault()
    if name == "hog":
        np.ones(2**31)  # 16 GiB of float64
    if name == "hang":
        time.sleep(60)
    if name == "bug":
        raise TypeError("an unexpected bug")
    data_exporters.export_to_pickle(sd, path, **kwargs)


def test_every_kind_of_child_death_is_that_recordings_fault_and_the_rest_converts(tmp_path):
    target = Target("pickle", "pickle", {})
    names = ["a", "crash", "b", "hog", "hang", "bug", "c"]
    items = _items(tmp_path, target, names)
    limits = RecordingLimits(memory_mb=300, seconds=3)
    results = export_batch(_misbehaving_exporter, target, items, default_fs_Hz=None, limits=limits)
    logging.getLogger().handlers.clear()
    by_name = {r.recording: r for r in results}
    for good in ("a", "b", "c"):
        assert by_name[good].ok
        back = load_spikedata_from_pickle(tmp_path / target.output(good))
        assert back.N == load_spikedata_from_pickle(DATA / "small.pkl").N
    expected = {
        "crash": "crashed with SIGSEGV while exporting",
        "hog": "ran out of memory (limit of 300 MB) while exporting",
        "hang": "took longer than 3 s while exporting; stopped",
        "bug": "TypeError: an unexpected bug (while exporting)",
    }
    for bad, text in expected.items():
        item = next(i for i in items if i.recording == bad)
        assert not by_name[bad].ok and by_name[bad].error == f"{item.source}: {text}"
        assert read_failure_stub(item.output) == by_name[bad].error
    leftovers = [p.name for p in (tmp_path / "results" / "pickle").iterdir() if p.name[0] == "."]
    assert leftovers == []  # the killed children's temporaries are gone


def test_on_bad_recording_fail_names_every_child_death(tmp_path):
    target = Target("pickle", "pickle", {})
    items = _items(tmp_path, target, ["a", "crash", "bug"])
    with pytest.raises(BatchExportError, match=r"2 of 3 recordings could not be converted") as err:
        export_batch(
            _misbehaving_exporter,
            target,
            items,
            default_fs_Hz=None,
            on_bad_recording="fail",
            limits=RecordingLimits(seconds=30),
        )
    assert isinstance(err.value, BatchError)
    assert "crash: " in str(err.value) and "SIGSEGV" in str(err.value)


def test_a_full_disk_in_a_child_fails_the_job_naming_the_recording(tmp_path):
    def full_disk(sd, path, **kwargs):
        raise OSError(28, "No space left on device", str(path))

    target = Target("pickle", "pickle", {})
    items = _items(tmp_path, target, ["a", "b"])
    with pytest.raises(EnvironmentFault, match="No space left on device") as err:
        export_batch(full_disk, target, items, default_fs_Hz=None, limits=RecordingLimits())
    assert any("while converting recording 'a'" in note for note in err.value.__notes__)


def test_a_child_crash_while_reading_an_output_is_an_unreadable_result(tmp_path, monkeypatch):
    target = Target("pickle", "pickle", {})
    out = tmp_path / "small.pkl"
    export_to_pickle(load_spikedata_from_pickle(DATA / "small.pkl"), out)
    from spikelab.formats import pickle_io

    real = pickle_io.load_spikedata_from_pickle

    def crashes_on_outputs(path, **kwargs):
        if Path(path) == out:
            _segfault()
        return real(path, **kwargs)

    monkeypatch.setattr(pickle_io, "load_spikedata_from_pickle", crashes_on_outputs)
    monkeypatch.setattr(pickle_io.FORMAT.__class__, "reader", lambda self: crashes_on_outputs)
    items = [VerifyItem("small", str(DATA / "small.pkl"), str(out))]
    doc = verify_batch(target, items, str(tmp_path / "v.json"), batch="b", limits=RecordingLimits())
    (result,) = doc["results"]
    assert result["status"] == "unreadable"
    assert result["message"] == "crashed with SIGSEGV while reading the output"


def test_a_source_that_crashes_its_child_is_reported_as_the_source(tmp_path, monkeypatch):
    target = Target("pickle", "pickle", {})
    out = tmp_path / "small.pkl"
    export_to_pickle(SpikeData([[1.0]], length=2.0), out)
    from spikelab import jobs

    monkeypatch.setattr(jobs, "load_source", lambda *a, **k: _segfault())  # every job's loader
    doc = verify_batch(
        target,
        [VerifyItem("small", str(DATA / "small.pkl"), str(out))],
        str(tmp_path / "v.json"),
        batch="b",
        limits=RecordingLimits(),
    )
    assert doc["results"][0]["message"] == "source: crashed with SIGSEGV while loading"
    assert doc["results"][0]["output_bytes"] == out.stat().st_size


def test_limits_come_from_the_config_else_from_the_job_and_the_resource_model(tmp_path):
    source = tmp_path / "x.pkl"
    source.write_bytes(b"x" * 10 * 2**20)
    model = Target("nwb", "nwb", {}).spec.resources
    assert RecordingLimits(memory_mb=123, seconds=4).for_source(source, model) == Limits(123, 4)
    derived = RecordingLimits(job_mem_mb=4000).for_source(source, model)
    held = isolation.resident_mb()
    assert 4000 - held - 5 <= derived.memory_mb <= 4000 - held + 5
    assert derived.seconds == model.runtime_min([10.0]) * 60
    assert RecordingLimits().for_source(source, model).memory_mb is None
    small = RecordingLimits(job_mem_mb=10).for_source(source, model)
    assert small.memory_mb == 256  # never less than a recording needs to start
    assert RecordingLimits.from_params({"enabled": False}, 1000) is None
    assert RecordingLimits.from_params({"memory_mb": 5}, 1000) == RecordingLimits(5, None, 1000)
