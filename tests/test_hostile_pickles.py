"""The pickle loader cannot be turned against the process that calls it: hostile pickles
(tests/hostile_pickles.py, written opcode by opcode) are refused with one error naming the
file, without crashing, allocating or leaking memory; real and synthetic pickles of every
protocol load exactly as plain ``pickle.load`` reads them."""

from __future__ import annotations

import collections
import datetime
import json
import os
import pickle
import pickletools
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hostile_pickles import BY_NAME, CASES, MEMOIZE, NONE, STOP, Probe, proto
from spikedata_factories import DATA, FIXTURES

from spikelab.data_loaders.data_loaders import (
    LoadError,
    UnsafePickleError,
    load_spikedata_from_pickle,
)
from spikelab.formats import pickle_io, pickle_scan
from spikelab.formats.errors import ExportError
from spikelab.formats.metadata import MAX_JSON_DEPTH, json_safe
from spikelab.spikedata import SpikeData

REPO = Path(__file__).resolve().parent.parent
HEADROOM_MB = 400  # address space the child may add: each bomb asks for 2 GB or more

_CHILD = textwrap.dedent(
    """
    import json, resource, sys
    from spikelab.formats import pickle_io

    def vm_kb():
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmSize:"):
                    return int(line.split()[1])

    limit = (vm_kb() + {headroom} * 1024) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    real_scan = pickle_io.scan_pickle
    out = {{}}
    for key, path, scanned in json.loads(sys.argv[1]):
        pickle_io.scan_pickle = real_scan if scanned else (lambda *a, **k: None)
        try:
            pickle_io.load_spikedata_from_pickle(path)
            out[key] = ["loaded", ""]
        except Exception as exc:
            out[key] = [type(exc).__name__, str(exc)]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out["rss growth (MB)"] = (rss - rss0) / 1024
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """Every hostile case loaded in one child process under a low address-space limit
    (a crash there fails these tests instead of killing pytest); case name -> (error class,
    message, path), and the same with the scan skipped for the ``unscanned`` cases."""
    folder = tmp_path_factory.mktemp("hostile")
    jobs, paths = [], {}
    for case in CASES:
        path = folder / f"{case.name}.pkl"
        path.write_bytes(case.data)
        paths[case.name] = str(path)
        jobs.append([case.name, str(path), True])
        if case.unscanned:
            jobs.append([f"{case.name} (unscanned)", str(path), False])
    return _run_child(jobs), paths


@pytest.mark.parametrize("name", [c.name for c in CASES])
def test_hostile_pickle_is_refused_with_its_fault_and_file(outcomes, name):
    out, paths = outcomes
    case = BY_NAME[name]
    error, message = out[name]
    assert error == case.error, message
    assert case.fragment in message
    assert message.startswith(f"{paths[name]}: ") and "\n" not in message


@pytest.mark.parametrize("name", [c.name for c in CASES if c.unscanned])
def test_the_restricted_unpickler_alone_refuses_it_too(outcomes, name):
    out, paths = outcomes
    expected_error, fragment = BY_NAME[name].unscanned
    error, message = out[f"{name} (unscanned)"]
    assert error == expected_error, message
    assert fragment in message and message.startswith(f"{paths[name]}: ")


def test_no_hostile_pickle_allocates_or_crashes(outcomes):
    out, _ = outcomes
    # the bombs ask for 2-8 GB, a 300 000-deep tuple takes 17 MB
    assert out["rss growth (MB)"] < 150


def _run_child(jobs: list) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD.format(headroom=HEADROOM_MB), json.dumps(jobs)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, f"the loader crashed (status {proc.returncode}):\n{proc.stderr}"
    return json.loads(proc.stdout)


def _mutants(count: int, seed: int = 2024) -> list[bytes]:
    """Valid and hostile pickles with random bytes changed, inserted, removed or cut."""
    rng = random.Random(seed)
    bases = [pickle.dumps(rich_recording(), protocol=p) for p in range(6)]
    bases += [(DATA / f"{name}.pkl").read_bytes() for name in FIXTURES]
    bases += [c.data for c in CASES if len(c.data) < 10_000]
    out = []
    for _ in range(count):
        data = bytearray(rng.choice(bases))
        for _ in range(rng.randint(1, 4)):
            at, r = rng.randrange(len(data) + 1), rng.random()
            if r < 0.3 and data:
                data[min(at, len(data) - 1)] = rng.randrange(256)
            elif r < 0.5:
                data[at:at] = bytes([rng.randrange(256)]) * rng.randint(1, 3)
            elif r < 0.65:
                del data[at : at + rng.randint(1, 20)]
            elif r < 0.8:
                start = rng.randrange(len(data) + 1)
                data[at:at] = data[start : start + rng.randint(1, 64)]
            else:
                del data[at:]
        out.append(bytes(data))
    return out


def test_damaged_pickles_load_or_give_one_error_naming_the_file(tmp_path):
    jobs = []
    for i, data in enumerate(_mutants(400)):
        path = _write(tmp_path, data, f"m{i}.pkl")
        jobs.append([str(path), str(path), True])
    out = _run_child(jobs)
    for path, (error, message) in ((k, v) for k, v in out.items() if k.endswith(".pkl")):
        if error != "loaded":
            assert error in ("LoadError", "UnsafePickleError"), (path, error, message)
            assert message.startswith(f"{path}: ") and "\n" not in message, message


# ---------------------------------------------------------------------------- the bounds
def _write(tmp_path: Path, data: bytes, name: str = "x.pkl") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_more_objects_than_the_bound_is_refused_before_unpickling(tmp_path, monkeypatch):
    sd = SpikeData([[1.0]] * 300, length=2.0)
    path = _write(tmp_path, pickle.dumps(sd, protocol=5))
    monkeypatch.setattr(pickle_scan, "MAX_OBJECTS", 1000)
    monkeypatch.setattr(pickle_io.SafeUnpickler, "load", None)  # must not be reached
    with pytest.raises(LoadError, match="more than 1000 objects") as err:
        load_spikedata_from_pickle(path)
    assert str(path) in str(err.value)


def test_more_memo_entries_than_the_bound_is_refused(tmp_path, monkeypatch):
    path = _write(tmp_path, proto(4) + NONE + MEMOIZE * 1001 + STOP)
    monkeypatch.setattr(pickle_scan, "MAX_OBJECTS", 1000)
    with pytest.raises(LoadError, match="more than 1000 memo entries"):
        load_spikedata_from_pickle(path)


def test_scan_of_the_real_pickles_stays_far_below_the_bounds():
    for name in FIXTURES:
        path = DATA / f"{name}.pkl"
        with open(path, "rb") as fh:
            report = pickle_io.scan_pickle(fh, path.stat().st_size, source=str(path))
        assert report.protocol == 5 and report.depth <= 8
        assert report.objects < 200 and report.memo < 200
        assert report.largest < path.stat().st_size


def test_the_scanner_knows_every_opcode_of_every_protocol():
    codes = {op.code.encode("latin-1") for op in pickletools.opcodes}
    assert set(pickle_scan._OPCODES) == codes


def test_a_file_changed_between_scan_and_load_is_refused(tmp_path, monkeypatch):
    path = _write(tmp_path, pickle.dumps(SpikeData([[1.0, 2.0]], length=3.0), protocol=5))
    real_scan = pickle_io.scan_pickle

    def scan_then_rewrite(fh, size, *, source):
        report = real_scan(fh, size, source=source)
        data = path.read_bytes()
        path.write_bytes(data)  # same bytes, new modification time
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        return report

    monkeypatch.setattr(pickle_io, "scan_pickle", scan_then_rewrite)
    with pytest.raises(LoadError, match="changed while it was read"):
        load_spikedata_from_pickle(path)


def test_trusted_loading_still_validates_the_finished_spikedata(tmp_path):
    for name, message in (
        ("spikedata_without_state", "SpikeData lacks 'train', 'N'"),  # no BUILD at all
        ("spikedata_partial_state", "SpikeData state lacks 'length', 'raw_time'"),
    ):
        path = _write(tmp_path, BY_NAME[name].data, f"{name}.pkl")
        with pytest.raises(LoadError, match=message) as err:
            load_spikedata_from_pickle(path, trusted=True)  # plain pickle.load, then checks
        assert str(path) in str(err.value)


def test_a_spikedata_inside_other_data_is_not_a_spikedata(tmp_path):
    path = _write(tmp_path, pickle.dumps([SpikeData([[1.0]], length=2.0)]))
    with pytest.raises(LoadError, match="holds a builtins.list, not a SpikeData"):
        load_spikedata_from_pickle(path)
    inner = SpikeData([[1.0]], length=2.0, metadata={"other": SpikeData([[1.0]], length=2.0)})
    path = _write(tmp_path, pickle.dumps(inner), "inner.pkl")
    with pytest.raises(LoadError, match="'metadata' holds a spikelab.spikedata.spikedata.Spike"):
        load_spikedata_from_pickle(path)


# ------------------------------------------------------------------------ what still loads
def _same(a, b, where="x"):
    """Exactly the same data: types, values, dtypes (byte order included), shapes, order."""
    assert type(a) is type(b), where
    if isinstance(a, np.ndarray):
        assert a.dtype.str == b.dtype.str and a.shape == b.shape, where
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            _same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, np.generic):
        assert a.dtype.str == b.dtype.str and a.tobytes() == b.tobytes(), where
    else:
        assert a == b, where


def _same_spikedata(a: SpikeData, b: SpikeData) -> None:
    assert a.__dict__.keys() == b.__dict__.keys()
    for key in a.__dict__:
        _same(a.__dict__[key], b.__dict__[key], key)


def rich_recording() -> SpikeData:
    """Every kind of value a SpikeData's metadata and attributes hold in practice."""
    rng = np.random.default_rng(3)
    train = [np.sort(rng.uniform(0, 1000.0, n)) for n in (5, 0, 17)]
    attrs = [
        {
            "electrode": i,
            "location": [float(i), 2.5 * i],
            "position": (1.0, 2.0, 3.0),
            "cluster_id": np.int64(10 + i),
            "quality": "good",
            "snr": np.float64(3.5 + i),
            "waveform": np.arange(4, dtype=np.float32) * i,
        }
        for i in range(3)
    ]
    shared = [1, 2, 3]
    cest = datetime.timezone(datetime.timedelta(hours=2), "CEST")
    metadata = {
        "fs_Hz": 20000.0,
        "name": "rec",
        "n": 3,
        "big": 2**70,
        "ok": True,
        "none": None,
        "complex": 1 + 2j,
        "date": datetime.date(2024, 5, 6),
        "start": datetime.datetime(2024, 5, 6, 7, 8, 9, 10),
        "start_cest": datetime.datetime(2024, 1, 1, 12, tzinfo=cest),
        "start_utc": datetime.datetime(2024, 1, 1, 12, tzinfo=datetime.UTC),
        "time": datetime.time(1, 2, 3),
        "duration": datetime.timedelta(days=1, seconds=2, microseconds=3),
        "tuple": (1, "a", 2.5),
        "nested": {"a": {"b": [1, 2, {"c": (3,)}]}},
        "np_scalars": [
            np.float64(1.5),
            np.int32(-3),
            np.bool_(True),
            np.uint8(7),
            np.str_("abc"),
            np.bytes_(b"xy"),
            np.float32(0.25),
            np.complex128(1j),
        ],
        "arrays": {
            "f32": np.arange(6, dtype=np.float32).reshape(2, 3),
            "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
            "i64": np.arange(5),
            "text": np.array(["ab", "c"]),
            "bytes": np.array([b"x", b"yz"]),
            "bool": np.array([True, False]),
            "big_endian": np.arange(3, dtype=">i4"),
            "empty": np.zeros((0,)),
            "zero_d": np.array(5.0),
            "strided": np.arange(10.0)[::2],
            "transposed": np.arange(24.0).reshape(2, 3, 4).transpose(1, 0, 2),
        },
        "bytes": b"\x00\x01\xff",
        "no_bytes": b"",
        "bytearray": bytearray(b"ab"),
        "set": {1, 2, "x"},
        "frozenset": frozenset({1.5}),
        "ordered": collections.OrderedDict(a=1, b=[2]),
        "shared_a": shared,
        "shared_b": shared,
    }
    raw = rng.normal(size=(2, 10)).astype(np.float32)
    return SpikeData(
        train,
        length=1000.0,
        neuron_attributes=attrs,
        metadata=metadata,
        raw_data=raw,
        raw_time=np.arange(10.0),
    )


@pytest.mark.parametrize("name", FIXTURES)
def test_real_spikelab_pickles_load_exactly_as_pickle_load_reads_them(name):
    path = DATA / f"{name}.pkl"
    with open(path, "rb") as fh:
        plain = pickle.load(fh)
    _same_spikedata(load_spikedata_from_pickle(path), plain)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_every_protocol_of_a_rich_recording_loads_exactly_as_pickle_load(tmp_path, protocol):
    sd = rich_recording()
    path = _write(tmp_path, pickle.dumps(sd, protocol=protocol))
    back = load_spikedata_from_pickle(path)
    _same_spikedata(back, pickle.loads(path.read_bytes()))
    assert back.metadata.keys() == sd.metadata.keys() and back.N == sd.N
    assert back.metadata["shared_a"] is back.metadata["shared_b"]
    assert all(t.flags.writeable and t.dtype == np.float64 for t in back.train)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_allowed_globals_build_instances_in_every_protocol(tmp_path, protocol):
    sd = SpikeData([[1.0]], length=2.0, metadata={"probe": Probe("np1", [1, 2])})
    path = _write(tmp_path, pickle.dumps(sd, protocol=protocol))
    with pytest.raises(UnsafePickleError, match="'hostile_pickles.Probe'"):
        load_spikedata_from_pickle(path)
    probe = load_spikedata_from_pickle(path, allow_globals=["hostile_pickles.Probe"])
    assert probe.metadata["probe"] == Probe("np1", [1, 2])
    assert load_spikedata_from_pickle(path, trusted=True).metadata["probe"].name == "np1"


def test_large_recordings_scan_within_the_bounds(tmp_path):
    rng = np.random.default_rng(5)
    n = 2000
    train = [np.sort(rng.uniform(0, 1e5, rng.integers(0, 50))) for _ in range(n)]
    attrs = [
        {"electrode": i, "location": [float(i), 0.0], "cluster_id": i, "quality": "good"}
        for i in range(n)
    ]
    sd = SpikeData(train, length=1e5, neuron_attributes=attrs, metadata={"fs_Hz": 3e4})
    for protocol in (0, 2, 5):
        path = _write(tmp_path, pickle.dumps(sd, protocol=protocol), f"p{protocol}.pkl")
        with open(path, "rb") as fh:
            report = pickle_io.scan_pickle(fh, path.stat().st_size)
        assert report.depth <= 8
        assert report.objects * 50 < pickle_scan.MAX_OBJECTS  # 2000 units: at most 36 000
        _same_spikedata(load_spikedata_from_pickle(path), sd)


# ------------------------------------------------------------------------------ json_safe
def _old_json_safe(value):
    """json_safe before it was made iterative: the reference its output must equal."""
    leaves = {str, int, float, bool, type(None)}
    if type(value) in leaves:
        return value
    if isinstance(value, dict):
        return {str(k): v if type(v) in leaves else _old_json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [v if type(v) in leaves else _old_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return _old_json_safe(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


@pytest.mark.parametrize(
    "value",
    [
        None,
        3,
        "x",
        b"\xff",
        np.float32(0.5),
        np.arange(3),
        np.array(7),
        np.array([{"a": 1}, None], dtype=object),
        {1: "int key", (1, 2): "tuple key", "1": "collides"},
        [[], {}, [[[]]], ({"a": ()},)],
        datetime.date(2024, 1, 1),
        Path("/x"),
    ],
)
def test_json_safe_output_is_what_it_was(value):
    assert json.dumps(json_safe(value)) == json.dumps(_old_json_safe(value))


def test_json_safe_of_a_rich_recording_is_what_it_was_where_that_was_json():
    sd = rich_recording()
    metadata = {k: v for k, v in sd.metadata.items() if k != "np_scalars"}
    for value in (metadata, sd.neuron_attributes, sd.metadata["np_scalars"][:5]):
        assert json.dumps(json_safe(value)) == json.dumps(_old_json_safe(value))
    # numpy bytes and complex scalars used to come out as bytes / complex, which json.dumps
    # (every exporter's next step) refused; they now come out as text like their Python kin
    assert json_safe([np.bytes_(b"xy"), np.complex128(1j)]) == ["xy", "1j"]


def test_json_safe_refuses_metadata_deeper_than_its_bound_without_recursing():
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(ExportError, match=f"metadata nested deeper than {MAX_JSON_DEPTH}"):
        json_safe({"deep": deep})
    cycle: list = []
    cycle.append(cycle)
    with pytest.raises(ExportError, match="nested deeper"):
        json_safe(cycle)
    ok: list = []
    for _ in range(MAX_JSON_DEPTH - 1):
        ok = [ok]
    assert json.dumps(json_safe(ok)) == "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH


def test_a_global_the_user_allows_is_called_even_where_the_allow_list_restricts_it(tmp_path):
    sd = SpikeData([[1.0]], length=2.0, metadata={"r": range(3)})
    path = _write(tmp_path, pickle.dumps(sd, protocol=4))
    with pytest.raises(UnsafePickleError, match=r"calls builtins.range\(...\)"):
        load_spikedata_from_pickle(path)
    assert load_spikedata_from_pickle(path, allow_globals=["builtins.range"]).metadata == {
        "r": range(3)
    }


def test_an_allowed_spikedata_subclass_loads_validated(tmp_path):
    from hostile_pickles import LabSpikeData

    path = _write(tmp_path, pickle.dumps(LabSpikeData([[1.0, 2.0]], length=3.0)))
    with pytest.raises(UnsafePickleError, match="'hostile_pickles.LabSpikeData'"):
        load_spikedata_from_pickle(path)
    sd = load_spikedata_from_pickle(path, allow_globals=["hostile_pickles.LabSpikeData"])
    assert type(sd) is LabSpikeData and sd.train[0].tolist() == [1.0, 2.0]


@pytest.mark.parametrize("fmt", ["hdf5", "nwb", "kilosort"])
def test_exporters_refuse_metadata_too_deep_for_json_with_an_export_error(tmp_path, fmt):
    from spikelab.data_loaders import data_exporters as ex

    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    sd = SpikeData([[1.0]], length=2.0, metadata={"fs_Hz": 2e4, "deep": deep})
    export = {
        "hdf5": lambda: ex.export_spikedata_to_hdf5(sd, tmp_path / "out" / "x.h5"),
        "nwb": lambda: ex.export_spikedata_to_nwb(sd, tmp_path / "out" / "x.nwb"),
        "kilosort": lambda: ex.export_spikedata_to_kilosort(sd, tmp_path / "out" / "x", fs_Hz=2e4),
    }[fmt]
    with pytest.raises(ExportError, match="metadata nested deeper than 500 levels"):
        export()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_fifo_or_a_device_is_refused_without_waiting(tmp_path):
    fifo = tmp_path / "rec.pkl"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero")):
        with pytest.raises(LoadError, match="not a regular file") as err:
            load_spikedata_from_pickle(path)  # opening a FIFO for reading would block
        assert str(path) in str(err.value)
