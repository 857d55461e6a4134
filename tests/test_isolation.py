"""Per-recording isolation: a worker child per batch, and what ends a recording's work in it (a
crash, a memory bomb, a hang, an exception) is that recording's fault while the rest of the
batch goes on in a fresh worker."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import struct
import time
import warnings
from dataclasses import dataclass
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
    for_each_recording,
    read_failure_stub,
    setup_logging,
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


# ------------------------------------------------------- a persistent worker per batch
@dataclass(frozen=True)
class _Rec:
    recording: str
    source: str


_LEAK: list[bytearray] = []  # what the "leaky" work keeps (in the worker: its module copy)
_SEEN: list[str] = []  # the items a worker did


def _behave(item: _Rec) -> dict:
    """Works on good items (returns the pid that did it); crashes, hangs, blows its memory,
    leaks or misbehaves only where the worker already did other work, by the item's name."""
    isolation.phase(EXPORTING)
    name = item.recording
    if name.startswith("crash"):
        _segfault()
    if name.startswith("hang"):
        time.sleep(60)
    if name.startswith("hog"):
        bytearray(4 * 2**30)  # 4 GiB of address space
    if name.startswith("leak"):  # keeps 250 MB of address space: more than half the limit
        _LEAK.append(bytearray(250 * 2**20))
    if name.startswith("grow"):  # keeps 150 MB and needs 200 MB more for a moment
        _LEAK.append(bytearray(150 * 2**20))
        bytearray(200 * 2**20)
    if name.startswith("flaky"):  # a bug that shows only after other items in the process
        logging.getLogger("spikelab.test").info("working on %s", name)
        if _SEEN:
            raise TypeError("state left by an earlier item")
    with open(item.source, "a") as fh:  # one line per attempt
        fh.write(f"{os.getpid()}\n")
    _SEEN.append(name)
    return {"recording": name, "pid": os.getpid()}


def _batch(tmp_path, names, *, memory_mb=None, seconds=None, per_child=None):
    items = [_Rec(name, str(tmp_path / f"{name}.attempts")) for name in names]
    results = for_each_recording(
        items,
        _behave,
        on_fault=lambda item, fault, keep_going: {"recording": item.recording, "error": fault},
        context=lambda item: f"while working on {item.recording}",
        failed="{bad} of {total}",
        isolate=lambda item: Limits(memory_mb=memory_mb, seconds=seconds),
        per_child=per_child,
    )
    return {r["recording"]: r for r in results}, {
        item.recording: Path(item.source).read_text().split() if Path(item.source).exists() else []
        for item in items
    }


def test_one_worker_takes_every_item_of_a_batch_in_turn(tmp_path):
    results, attempts = _batch(tmp_path, ["a", "b", "c", "d", "e"], memory_mb=300, seconds=30)
    pids = {r["pid"] for r in results.values()}
    assert len(pids) == 1 and os.getpid() not in pids
    assert all(len(a) == 1 for a in attempts.values())


def test_per_child_1_forks_a_child_per_item(tmp_path):
    results, _ = _batch(tmp_path, ["a", "b", "c"], per_child=1)
    assert len({r["pid"] for r in results.values()}) == 3


def test_a_crash_on_item_2_of_5_fails_it_and_a_fresh_worker_does_the_rest(tmp_path):
    results, attempts = _batch(tmp_path, ["a", "crash", "c", "d", "e"], seconds=30)
    error = results["crash"]["error"]
    assert error.description == "crashed with SIGSEGV while exporting"
    assert error.error == f"{tmp_path / 'crash.attempts'}: crashed with SIGSEGV while exporting"
    assert [n for n, r in results.items() if "pid" in r] == ["a", "c", "d", "e"]
    assert results["a"]["pid"] != results["c"]["pid"] == results["d"]["pid"] == results["e"]["pid"]


def test_a_timeout_on_item_3_kills_the_worker_and_the_rest_goes_on(tmp_path):
    t0 = time.monotonic()
    results, attempts = _batch(tmp_path, ["a", "b", "hang", "d", "e"], seconds=1)
    assert time.monotonic() - t0 < 10  # one time limit, not two: a timeout is not run again
    assert results["hang"]["error"].description == "took longer than 1 s while exporting; stopped"
    assert [n for n, r in results.items() if "pid" in r] == ["a", "b", "d", "e"]
    assert results["b"]["pid"] != results["d"]["pid"] == results["e"]["pid"]


def test_a_memory_blowup_on_item_1_fails_it_and_the_rest_goes_on(tmp_path):
    rss = isolation.resident_mb()
    results, _ = _batch(tmp_path, ["hog", "b", "c", "d", "e"], memory_mb=200, seconds=30)
    assert results["hog"]["error"].description == (
        "ran out of memory (limit of 200 MB) while exporting"
    )
    assert [n for n, r in results.items() if "pid" in r] == ["b", "c", "d", "e"]
    assert len({r["pid"] for n, r in results.items() if "pid" in r}) == 1
    assert isolation.resident_mb() < rss + 50


def test_a_worker_that_grew_past_half_its_limit_is_replaced_between_items(tmp_path):
    names = ["leak1", "leak2", "leak3", "leak4"]
    results, attempts = _batch(tmp_path, names, memory_mb=400, seconds=30)
    assert all("pid" in r for r in results.values())  # the 4th would need 1000 MB in one worker
    assert len({r["pid"] for r in results.values()}) == 4  # each found its worker grown
    assert all(len(a) == 1 for a in attempts.values())  # replaced before, not failed and rerun


def test_a_good_item_that_a_grown_worker_cannot_hold_is_rerun_in_a_fresh_one(tmp_path):
    # grow1 leaves 150 MB (under half of 400), grow2 then needs 150 + 150 + 200 > 400 MB
    results, attempts = _batch(tmp_path, ["grow1", "grow2", "c"], memory_mb=400, seconds=30)
    assert all("pid" in r for r in results.values())
    assert results["grow1"]["pid"] != results["grow2"]["pid"] == results["c"]["pid"]
    assert len(attempts["grow2"]) == 1  # only the fresh worker's attempt got to the end


def test_a_failure_in_a_used_worker_is_judged_again_by_a_fresh_one_and_logged_once(tmp_path):
    log_path = tmp_path / "job.log"
    setup_logging(log_path)
    try:
        results, _ = _batch(tmp_path, ["a", "flaky", "c"], seconds=30)
    finally:
        logging.getLogger().handlers.clear()
    assert all("pid" in r for r in results.values())
    assert results["a"]["pid"] != results["flaky"]["pid"]
    lines = log_path.read_text().splitlines()
    assert [line.split(" ", 2)[2] for line in lines] == ["INFO working on flaky"]


def test_each_item_logs_its_own_warnings_as_a_child_of_its_own_did(tmp_path):
    def warns(item: _Rec) -> str:
        warnings.warn(f"odd recording {item.recording[0]}", UserWarning, stacklevel=1)
        return item.recording

    log_path = tmp_path / "job.log"
    setup_logging(log_path)
    try:
        with warnings.catch_warnings():
            warnings.resetwarnings()
            warnings.simplefilter("default")
            logging.captureWarnings(False)  # pytest records warnings: log them instead
            logging.captureWarnings(True)
            for_each_recording(
                [_Rec(n, n) for n in ("a1", "a2", "b1")],
                warns,
                on_fault=lambda item, fault, keep_going: None,
                context=str,
                failed="{bad} of {total}",
                isolate=lambda item: Limits(seconds=30),
            )
    finally:
        logging.captureWarnings(False)
        logging.getLogger().handlers.clear()
    shown = [line for line in log_path.read_text().splitlines() if "UserWarning: " in line]
    assert [line.split("UserWarning: ")[1] for line in shown] == [
        "odd recording a",
        "odd recording a",  # the same warning again: a fresh child would have shown it too
        "odd recording b",
    ]


def _distinct(seed: int) -> SpikeData:
    rng = np.random.default_rng(seed)
    train = [np.sort(rng.uniform(0.0, 5000.0, n)) for n in rng.integers(20, 200, 6)]
    return SpikeData(train, length=5000.0, metadata={"fs_Hz": 20000.0, "seed": seed})


@pytest.mark.parametrize("fmt", ["hdf5", "nwb", "kilosort", "pickle"])
def test_no_output_of_a_worker_holds_anything_of_another_recording(tmp_path, fmt):
    target = Target(fmt, fmt, {"style": "ragged"} if fmt == "hdf5" else {})
    items = []
    for seed in range(4):
        source = tmp_path / "in" / f"r{seed}.pkl"
        source.parent.mkdir(exist_ok=True)
        export_to_pickle(_distinct(seed), source)
        items.append(ExportItem(f"r{seed}", str(source), str(tmp_path / target.output(f"r{seed}"))))
    limits = RecordingLimits(seconds=60)
    results = export_batch(target.spec.writer(), target, items, default_fs_Hz=None, limits=limits)
    logging.getLogger().handlers.clear()
    assert all(r.ok for r in results)
    verified = [VerifyItem(i.recording, i.source, i.output) for i in items]
    doc = verify_batch(target, verified, str(tmp_path / "v.json"), batch="b", limits=limits)
    assert [r["status"] for r in doc["results"]] == ["ok"] * 4
    for i, item in enumerate(items):
        out = Path(item.output)
        files = [out] if out.is_file() else [p for p in out.rglob("*") if p.is_file()]
        data = b"".join(p.read_bytes() for p in files)
        for j, other in enumerate(items):
            if j == i:
                continue
            sd = load_spikedata_from_pickle(other.source)
            times = np.concatenate(sd.train)
            for value in (*times, *(times / 1000.0)):
                assert struct.pack("<d", value) not in data, (item.recording, other.recording)


def test_code_that_a_pickle_may_run_gets_a_child_per_recording():
    limits = RecordingLimits()
    assert limits.per_child_for(None) is None
    assert limits.per_child_for({"trusted": False, "allow_globals": []}) is None
    assert limits.per_child_for({"trusted": True}) == 1
    assert limits.per_child_for({"allow_globals": ["mypkg.MyClass"]}) == 1
    assert RecordingLimits(per_child=5).per_child_for({"trusted": True}) == 5


_WARM: list[bool] = []  # set by the warm-up, in the job's process (so in the workers after it)


def _needs_warm_up(item: _Rec) -> int:
    """Fails (by the item's name) unless the process was warmed up before the fork."""
    if not _WARM:
        if item.recording == "slow":
            time.sleep(5)  # e.g. imports on a loaded machine
        raise MemoryError  # e.g. the imports took the room
    return os.getpid()


def _warm_batch(names, work, calls):
    def warm_up():
        calls.append(1)
        _WARM.append(True)

    try:
        return for_each_recording(
            [_Rec(n, n) for n in names],
            work,
            on_fault=lambda item, fault, keep_going: fault.description,
            context=str,
            failed="{bad} of {total}",
            isolate=lambda item: Limits(seconds=2),
            warm_up=warm_up,
        )
    finally:
        _WARM.clear()


def test_the_first_worker_pays_its_own_imports_and_no_warm_up_is_run():
    calls = []
    pids = _warm_batch(["a", "b", "c"], lambda item: os.getpid(), calls)
    assert calls == [] and len(set(pids)) == 1


def test_the_job_warms_up_once_before_it_forks_a_second_worker():
    calls = []
    outcomes = _warm_batch(["a", "crash", "c", "crash2", "e"], _behave_without_files, calls)
    assert calls == [1]
    assert outcomes[1] == outcomes[3] == "crashed with SIGSEGV while loading"


def _behave_without_files(item: _Rec) -> int:
    if item.recording.startswith("crash"):
        _segfault()
    return os.getpid()


@pytest.mark.parametrize("name", ["memory", "slow"])
def test_a_failure_of_the_cold_first_worker_is_judged_again_by_a_warm_one(name):
    calls = []
    pids = _warm_batch([name, "b"], _needs_warm_up, calls)
    assert calls == [1]
    assert all(isinstance(pid, int) for pid in pids), pids
