"""Safe loading of untrusted SpikeData pickles and atomic pickle export."""

import io
import os
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest
from spikedata_factories import FIXTURES, SYNTHETIC, assert_same_trains, fixture, synthetic

from spikelab.data_loaders.data_exporters import ExportError, export_to_pickle
from spikelab.data_loaders.data_loaders import (
    LoadError,
    UnsafePickleError,
    load_spikedata_from_pickle,
)
from spikelab.spikedata import SpikeData


@pytest.mark.parametrize("name", FIXTURES)
def test_real_spikelab_pickles_load_with_the_restricted_unpickler(name):
    sd = fixture(name)
    expected = {
        "small": (8, 1396, 0.0, 10000.0),
        "empty_units": (6, 197, 0.0, 5000.0),
        "neg_start": (5, 104, -200.0, 500.0),
    }[name]
    assert (sd.N, sd.n_spikes, sd.start_time, sd.length) == expected


def test_fixture_metadata_and_attributes_survive_loading():
    sd = fixture("small")
    assert sd.metadata["fs_Hz"] == 20000.0
    assert sd.neuron_attributes[0] == {"electrode": 1, "location": [0.0, 0.0]}
    empty = fixture("empty_units")
    assert [t.size for t in empty.train][1] == 0 and empty.train[4].size == 0


# ----------------------------------------------------------------- hostile pickles
class _Reduce:
    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _hostile_payloads(sentinel):
    cmd = f"touch {sentinel}"
    return {
        "os.system": _Reduce(os.system, (cmd,)),
        "subprocess.call": _Reduce(subprocess.call, (["touch", str(sentinel)],)),
        "builtins.eval": _Reduce(eval, (f"open({str(sentinel)!r}, 'w')",)),
        "builtins.exec": _Reduce(exec, (f"open({str(sentinel)!r}, 'w')",)),
        "importlib": _Reduce(__import__("importlib").import_module, ("this",)),
        "unexpected global": _Reduce(io.open, (str(sentinel), "w")),
    }


@pytest.mark.parametrize(
    "kind",
    [
        "os.system",
        "subprocess.call",
        "builtins.eval",
        "builtins.exec",
        "importlib",
        "unexpected global",
    ],
)
def test_hostile_pickle_is_refused_naming_file_and_global_and_nothing_runs(tmp_path, kind):
    sentinel = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(_hostile_payloads(sentinel)[kind]))
    with pytest.raises(UnsafePickleError) as err:
        load_spikedata_from_pickle(path)
    assert str(path) in str(err.value) and "refused" in str(err.value)
    assert not sentinel.exists()


def test_spikedata_pickle_carrying_a_callable_attribute_is_refused(tmp_path):
    sentinel = tmp_path / "pwned"
    sd = SpikeData([[1.0]], length=2.0)
    sd.__dict__["hook"] = _Reduce(os.system, (f"touch {sentinel}",))
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(sd))
    with pytest.raises(UnsafePickleError, match="posix.system|nt.system"):
        load_spikedata_from_pickle(path)
    assert not sentinel.exists()


def test_spikedata_pickle_with_an_allowed_class_as_attribute_is_refused(tmp_path):
    sd = SpikeData([[1.0]], length=2.0)
    sd.__dict__["hook"] = np.ndarray  # a class object smuggled into the state
    path = tmp_path / "odd.pkl"
    path.write_bytes(pickle.dumps(sd))
    with pytest.raises(LoadError, match="callable or class"):
        load_spikedata_from_pickle(path)


# ----------------------------------------------------------------- broken pickles
def _broken_cases(tmp_path):
    good = pickle.dumps(SpikeData([[1.0, 2.0]], length=3.0))
    bad_nan = SpikeData([[1.0]], length=3.0)
    bad_nan.__dict__["train"] = [np.array([1.0, np.nan])]
    unsorted = SpikeData([[1.0]], length=3.0)
    unsorted.__dict__["train"] = [np.array([2.0, 1.0])]
    outside = SpikeData([[1.0]], length=3.0)
    outside.__dict__["train"] = [np.array([5.0])]
    return {
        "empty": (b"", "empty"),
        "truncated": (good[: len(good) // 2], "truncated or corrupt"),
        "random bytes": (np.random.default_rng(0).bytes(300), "pickle"),
        "a dict": (pickle.dumps({"train": []}), "holds a builtins.dict, not a SpikeData"),
        "a list": (pickle.dumps([1, 2]), "not a SpikeData"),
        "an ndarray": (pickle.dumps(np.arange(3)), "numpy.ndarray, not a SpikeData"),
        "nan": (pickle.dumps(bad_nan), "not finite"),
        "unsorted": (pickle.dumps(unsorted), "not sorted"),
        "outside": (pickle.dumps(outside), "outside the recording"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "empty",
        "truncated",
        "random bytes",
        "a dict",
        "a list",
        "an ndarray",
        "nan",
        "unsorted",
        "outside",
    ],
)
def test_broken_pickle_gives_one_clear_error_naming_the_file(tmp_path, case):
    data, message = _broken_cases(tmp_path)[case]
    path = tmp_path / "broken.pkl"
    path.write_bytes(data)
    with pytest.raises((LoadError, UnsafePickleError)) as err:
        load_spikedata_from_pickle(path)
    assert str(path) in str(err.value)
    assert message in str(err.value)


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pkl"):
        load_spikedata_from_pickle(tmp_path / "nope.pkl")


def test_numpy_1x_module_names_still_load(tmp_path):
    data = pickle.dumps(SpikeData([[1.0, 2.0]], length=3.0), protocol=2)
    old = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert old != data
    path = tmp_path / "old.pkl"
    path.write_bytes(old)
    np.testing.assert_array_equal(load_spikedata_from_pickle(path).train[0], [1.0, 2.0])


def test_trusted_opt_in_loads_a_pickle_the_restricted_loader_refuses(tmp_path):
    from collections import Counter

    sd = SpikeData([[1.0]], length=2.0, metadata={"counts": Counter(a=1)})
    path = tmp_path / "trusted.pkl"
    path.write_bytes(pickle.dumps(sd))
    with pytest.raises(UnsafePickleError, match="collections.Counter"):
        load_spikedata_from_pickle(path)
    assert load_spikedata_from_pickle(path, trusted=True).metadata["counts"]["a"] == 1
    named = load_spikedata_from_pickle(path, allow_globals=["collections.Counter"])
    assert named.metadata["counts"]["a"] == 1


def test_remote_url_needs_allow_remote():
    with pytest.raises(LoadError, match="allow_remote"):
        load_spikedata_from_pickle("s3://bucket/key.pkl")


# ----------------------------------------------------------------- export_to_pickle
@pytest.mark.parametrize("name", SYNTHETIC)
@pytest.mark.parametrize("protocol", [None, 0, 1, 2, 3, 4, 5])
def test_export_to_pickle_round_trips_exactly(tmp_path, name, protocol):
    sd = synthetic(name)
    path = export_to_pickle(sd, tmp_path / "a" / "b" / "out.pkl", protocol=protocol)
    assert path == str(tmp_path / "a" / "b" / "out.pkl")
    back = load_spikedata_from_pickle(path)
    assert_same_trains(sd, back)
    assert back.metadata == sd.metadata
    assert back.neuron_attributes == sd.neuron_attributes
    np.testing.assert_array_equal(back.raw_data, sd.raw_data)


def _many_pieces_recording(n_units=3000):
    """More arrays than one writev call takes, some above the pickler's 64 KiB frames."""
    rng = np.random.default_rng(6)
    train = [
        np.sort(rng.uniform(0, 1e5, 20_000 if i % 700 == 0 else i % 9)) for i in range(n_units)
    ]
    attrs = [{"electrode": i, "location": [float(i), 0.0]} for i in range(n_units)]
    return SpikeData(train, length=1e5, neuron_attributes=attrs, metadata={"fs_Hz": 3e4})


@pytest.mark.parametrize("protocol", [None, 2, 4])
def test_export_writes_the_bytes_of_pickle_dumps_in_few_calls(tmp_path, monkeypatch, protocol):
    import spikelab.formats.pickle_io as pickle_io

    sd = _many_pieces_recording()
    calls = []
    real_writev = os.writev
    monkeypatch.setattr(
        pickle_io.os,
        "writev",
        lambda fd, pieces: calls.append(len(pieces)) or real_writev(fd, pieces),
    )
    path = export_to_pickle(sd, tmp_path / "out.pkl", protocol=protocol)
    expected = pickle.dumps(sd, protocol=pickle.HIGHEST_PROTOCOL if protocol is None else protocol)
    assert Path(path).read_bytes() == expected
    assert max(calls) <= pickle_io._GatheringWriter.MAX_PIECES and len(calls) < 100
    assert_same_trains(sd, load_spikedata_from_pickle(path))
    assert_same_trains(sd, pickle.loads(expected))


def test_short_writes_resume_at_the_exact_byte(tmp_path, monkeypatch):
    import spikelab.formats.pickle_io as pickle_io

    def short_writev(fd, pieces):  # writes a third of what it is given, at least one byte
        data = b"".join(bytes(pickle_io._unwritten([p], 0)[0]) for p in pieces)
        return os.write(fd, data[: max(1, len(data) // 3)])

    sd = _many_pieces_recording(300)
    monkeypatch.setattr(pickle_io.os, "writev", short_writev)
    path = export_to_pickle(sd, tmp_path / "out.pkl")
    assert Path(path).read_bytes() == pickle.dumps(sd, protocol=pickle.HIGHEST_PROTOCOL)


def test_failed_dump_leaves_the_previous_file_intact_and_no_temporary(tmp_path):
    path = tmp_path / "out.pkl"
    export_to_pickle(SpikeData([[1.0]], length=2.0), path)
    before = path.read_bytes()
    with pytest.raises((pickle.PicklingError, TypeError, AttributeError)):
        export_to_pickle({"unpicklable": lambda: None}, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.pkl"]


@pytest.mark.parametrize("protocol", [99, -5, "5", 2.0, True])
def test_bad_protocol_raises_before_any_file_exists(tmp_path, protocol):
    with pytest.raises(ExportError, match="protocol"):
        export_to_pickle(SpikeData([[1.0]]), tmp_path / "x.pkl", protocol=protocol)
    assert not any(tmp_path.iterdir())


def test_s3_flags_must_match_the_destination(tmp_path):
    with pytest.raises(ExportError, match="s3://"):
        export_to_pickle(SpikeData([[1.0]]), tmp_path / "x.pkl", s3_upload=True)
    with pytest.raises(ExportError, match="s3_upload=True"):
        export_to_pickle(SpikeData([[1.0]]), "s3://bucket/x.pkl")
    assert not any(tmp_path.iterdir())


# ------------------------------------------------------------ SpikeLab 0.1.2's hooks and errors
def test_anything_but_a_spikedata_is_a_type_error_before_any_file_exists(tmp_path):
    from spikelab.data_loaders.data_exporters import UnsupportedObjectError

    with pytest.raises(TypeError, match="Expected a spikelab data object") as err:
        export_to_pickle({"not": "spikedata"}, tmp_path / "sub" / "x.pkl")
    assert isinstance(err.value, UnsupportedObjectError) and isinstance(err.value, ExportError)
    assert not any(tmp_path.iterdir())


def test_a_spikedata_that_fails_to_pickle_leaves_the_previous_file_intact(tmp_path):
    path = tmp_path / "out.pkl"
    export_to_pickle(SpikeData([[1.0]], length=2.0), path)
    before = path.read_bytes()
    with pytest.raises((pickle.PicklingError, TypeError, AttributeError)):
        export_to_pickle(SpikeData([[1.0]], length=2.0, metadata={"f": lambda: None}), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.pkl"]


def test_pickle_dump_patched_through_the_exporters_module_is_used(tmp_path, monkeypatch):
    from spikelab.data_loaders import data_exporters

    path = tmp_path / "out.pkl"
    export_to_pickle(SpikeData([[1.0]], length=2.0), path)
    before = path.read_bytes()

    def failing_dump(*args, **kwargs):
        raise RuntimeError("simulated dump failure")

    monkeypatch.setattr(data_exporters.pickle, "dump", failing_dump)
    with pytest.raises(RuntimeError, match="simulated dump failure"):
        data_exporters.export_to_pickle(SpikeData([[2.0]], length=2.0), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.pkl"]


@pytest.mark.parametrize("patched", ["s3_utils", "data_exporters"])
@pytest.mark.parametrize("fails", [False, True])
def test_the_upload_can_be_replaced_where_spikelab_users_patch_it(monkeypatch, patched, fails):
    from spikelab.data_loaders import data_exporters, s3_utils

    sd = fixture("small")
    calls = []

    def fake_upload(local_path, s3_url, **credentials):
        assert isinstance(local_path, str) and local_path.endswith(".pkl")
        assert_same_trains(sd, load_spikedata_from_pickle(local_path))
        calls.append((local_path, s3_url, credentials))
        if fails:
            raise RuntimeError("simulated upload failure")

    monkeypatch.setattr(
        {"s3_utils": s3_utils, "data_exporters": data_exporters}[patched],
        "upload_to_s3",
        fake_upload,
    )
    url = "s3://bucket/path/out.pkl"
    if fails:
        with pytest.raises(RuntimeError, match="simulated upload failure"):
            data_exporters.export_to_pickle(sd, url, s3_upload=True, region_name="eu-west-1")
    else:
        assert (
            data_exporters.export_to_pickle(sd, url, s3_upload=True, region_name="eu-west-1") == url
        )
    ((local, s3_url, credentials),) = calls
    assert s3_url == url and credentials["region_name"] == "eu-west-1"
    assert "endpoint_url" not in credentials  # passed only when given
    assert not os.path.exists(local)  # the temporary file is gone, upload or not


@pytest.mark.parametrize("target", ["/tmp/local_file.pkl", "https://example.com/file.pkl"])
def test_s3_upload_to_something_else_names_the_s3_url_it_needs(target):
    with pytest.raises(ExportError, match="needs an S3 URL"):
        export_to_pickle(SpikeData([[1.0]]), target, s3_upload=True)
