"""Hostile input files and exports that cannot be written.

An adversarial corpus built here with h5py and numpy: files that point outside themselves
(external raw storage, external links, virtual datasets, object references to unnamed objects),
paths that are not regular files (FIFO, device, directory), headers and attributes declaring
absurd sizes, malformed JSON, TSV and params.py. Every loader must raise exactly LoadError
naming the file (and the field), never read the outside file, never hang; every exporter must
refuse what it cannot write (sample indices beyond int64, absurd rasters) before creating any
file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from spikelab.formats import files
from spikelab.formats.errors import ExportError, LoadError
from spikelab.formats.hdf5 import export_spikedata_to_hdf5, load_spikedata_from_hdf5
from spikelab.formats.kilosort import export_spikedata_to_kilosort, load_spikedata_from_kilosort
from spikelab.formats.nwb import export_spikedata_to_nwb, load_spikedata_from_nwb
from spikelab.spikedata import SpikeData

SENTINEL = b"SENTINEL-OUTSIDE-FILE-do-not-read-7f3a"
FS = 20000.0
DEADLINE_S = 10.0


def small() -> SpikeData:
    return SpikeData(
        [[1.0, 2.5, 7.0], [], [3.25]],
        length=10.0,
        neuron_attributes=[{"cluster_id": 4}, {"cluster_id": 5}, {"cluster_id": 9}],
        metadata={"fs_Hz": FS},
    )


@pytest.fixture
def outside(tmp_path) -> Path:
    """A file outside every input: its bytes must never reach a loader's result or error."""
    path = tmp_path / "outside" / "secret.txt"
    path.parent.mkdir()
    path.write_bytes(SENTINEL * 64)
    return path


@pytest.fixture
def fifo(tmp_path) -> Path:
    path = tmp_path / "outside" / "pipe"
    path.parent.mkdir(exist_ok=True)
    os.mkfifo(path)
    return path


_RELEASER = """
import os, sys, time
time.sleep(float(sys.argv[1]))
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:  # release every open() waiting for a writer (HDF5 may retry)
    for path in sys.argv[2:]:
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:  # no reader waiting now
            pass
    time.sleep(0.01)
"""


def within_deadline(call, fifos: tuple[Path, ...] = ()):
    """``call()``, failing if it takes more than DEADLINE_S. A loader blocked opening one of
    ``fifos`` (it would wait forever for a writer, holding the GIL inside HDF5) is released
    after the deadline by another process that opens their write ends, then the test fails."""
    releaser = None
    if fifos:
        argv = [sys.executable, "-c", _RELEASER, str(DEADLINE_S), *map(str, fifos)]
        releaser = subprocess.Popen(argv)
    start = time.monotonic()
    try:
        return call()
    finally:
        elapsed = time.monotonic() - start
        if releaser is not None:
            releaser.kill()
            releaser.wait()
        if elapsed > DEADLINE_S:
            pytest.fail(f"the loader hung for {elapsed:.0f} s (it opened a FIFO?)")


def assert_load_error(call, *fragments: str, fifos: tuple[Path, ...] = ()) -> str:
    """``call()`` raises exactly LoadError whose message holds every fragment and no byte of
    the outside file; returns the message."""
    with pytest.raises(LoadError) as err:
        within_deadline(call, fifos)
    assert type(err.value) is LoadError
    message = str(err.value)
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert SENTINEL.decode() not in message and SENTINEL.decode() not in repr(err.value)
    assert "\n" not in message
    return message


# ------------------------------------------------------------------------------ HDF5 corpus
def ragged_h5(path: Path, **attrs) -> Path:
    """A valid ragged HDF5 file as the exporter writes it, then ``attrs`` set on the root."""
    export_spikedata_to_hdf5(small(), path)
    with h5py.File(path, "a") as f:
        for key, value in attrs.items():
            f.attrs[key] = value
    return path


def test_a_dataset_with_external_raw_storage_is_refused_unread(tmp_path, outside, fifo):
    path = ragged_h5(tmp_path / "ext_raw.h5")
    with h5py.File(path, "a") as f:
        del f["spike_times"]
        f.create_dataset("spike_times", shape=(4,), dtype="f8", external=[(str(outside), 0, 32)])
    assert_load_error(
        lambda: load_spikedata_from_hdf5(path), str(path), "'spike_times'", "external file"
    )
    # The same, with a FIFO as the external file: reading it would block forever.
    with h5py.File(path, "a") as f:
        del f["spike_times"]
        f.create_dataset("spike_times", shape=(4,), dtype="f8", external=[(str(fifo), 0, 32)])
    assert_load_error(lambda: load_spikedata_from_hdf5(path), str(path), fifos=(fifo,))


@pytest.mark.parametrize("where", ["dataset", "parent group", "soft link to it"])
def test_an_external_link_is_refused_without_opening_its_target(tmp_path, fifo, where):
    other = tmp_path / "outside" / "other.h5"
    with h5py.File(other, "w") as f:
        f.create_group("g").create_dataset("times", data=np.frombuffer(SENTINEL[:32], "f8"))
    path = ragged_h5(tmp_path / f"ext_link_{where.replace(' ', '_')}.h5")
    with h5py.File(path, "a") as f:
        del f["spike_times"]
        if where == "dataset":
            f["spike_times"] = h5py.ExternalLink(str(other), "/g/times")
            name = "spike_times"
        elif where == "parent group":
            f["ext"] = h5py.ExternalLink(str(other), "/g")
            name = "ext/times"
        else:
            f["ext"] = h5py.ExternalLink(str(fifo), "/g")  # a FIFO: opening it would hang
            f["spike_times"] = h5py.SoftLink("/ext/times")
            name = "spike_times"
        f.attrs["spike_times_dataset"] = name
    assert_load_error(
        lambda: load_spikedata_from_hdf5(path), str(path), "external link", fifos=(fifo,)
    )


def test_a_virtual_dataset_is_refused(tmp_path, outside):
    other = tmp_path / "outside" / "source.h5"
    with h5py.File(other, "w") as f:
        f["times"] = np.frombuffer(SENTINEL[:32], "f8")
    path = ragged_h5(tmp_path / "vds.h5")
    with h5py.File(path, "a") as f:
        del f["spike_times"]
        layout = h5py.VirtualLayout(shape=(4,), dtype="f8")
        layout[:] = h5py.VirtualSource(str(other), "times", shape=(4,))
        f.create_virtual_dataset("spike_times", layout)
    assert_load_error(lambda: load_spikedata_from_hdf5(path), str(path), "virtual dataset")


@pytest.mark.parametrize("loader", [load_spikedata_from_hdf5, load_spikedata_from_nwb])
def test_paths_that_are_not_regular_files_are_refused_at_once(tmp_path, fifo, loader):
    assert_load_error(lambda: loader(fifo), str(fifo), "FIFO", fifos=(fifo,))
    assert_load_error(lambda: loader("/dev/zero"), "/dev/zero", "character device")
    assert_load_error(lambda: loader(tmp_path), str(tmp_path), "directory")


def test_a_missing_hdf5_file_is_still_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.h5: no such file"):
        load_spikedata_from_hdf5(tmp_path / "missing.h5")


def test_a_fifo_swapped_in_after_the_check_cannot_hang_the_loader(tmp_path, fifo, monkeypatch):
    real_stat = os.stat
    regular = real_stat(ragged_h5(tmp_path / "regular.h5"))

    def stat_before_the_swap(path, *args, **kwargs):  # the check sees a regular file...
        return regular if os.fspath(path) == str(fifo) else real_stat(path, *args, **kwargs)

    monkeypatch.setattr(files.os, "stat", stat_before_the_swap)
    # ...but what is opened is the FIFO: opened non-blocking, its descriptor is refused.
    assert_load_error(lambda: load_spikedata_from_hdf5(fifo), str(fifo), "FIFO", fifos=(fifo,))


@pytest.mark.parametrize(
    ("attrs", "fragments"),
    [
        ({"metadata_json": "{not json"}, ["metadata_json", "not readable JSON"]),
        ({"metadata_json": "[1, 2]"}, ["metadata_json", "JSON object"]),
        ({"neuron_attributes_json": "[{]"}, ["neuron_attributes_json", "not readable JSON"]),
        ({"neuron_attributes_json": "[" * 100_000}, ["neuron_attributes_json", "too deeply"]),
        ({"neuron_attributes_json": '"text"'}, ["neuron_attributes_json", "list of objects"]),
        ({"metadata_json": b"\xff\xfe"}, ["metadata_json", "UTF-8"]),
        ({"metadata_json": np.arange(3)}, ["metadata_json", "must be a text"]),
        ({"length_ms": "long"}, ["'length_ms'", "must be a number"]),
        ({"length_ms": np.nan}, ["'length_ms'", "finite"]),
        ({"start_time": np.zeros(3)}, ["'start_time'", "must be a number"]),
        ({"spikelab_style": 7}, ["'spikelab_style'", "must be a text"]),
        ({"spike_times_dataset": "nowhere"}, ["no dataset 'nowhere'"]),
        ({"spike_times_dataset": "/"}, ["'/' is a group, not a dataset"]),
    ],
)
def test_malformed_attributes_name_the_file_and_the_attribute(tmp_path, attrs, fragments):
    path = ragged_h5(tmp_path / "attrs.h5", **attrs)
    assert_load_error(lambda: load_spikedata_from_hdf5(path), str(path), *fragments)


@pytest.mark.parametrize(
    ("n", "fragment"),
    [("many", "'N' must be a number"), (1e12, "'N' must be <= 1048576"), (2.5, "integer")],
)
def test_the_unit_count_attribute_is_checked_before_anything_is_built(tmp_path, n, fragment):
    path = tmp_path / "paired.h5"
    export_spikedata_to_hdf5(small(), path, style="paired")
    with h5py.File(path, "a") as f:
        f.attrs["N"] = n
    assert_load_error(lambda: load_spikedata_from_hdf5(path), str(path), fragment)
    with h5py.File(path, "a") as f:  # no N at all: the indices tell
        del f.attrs["N"]
    assert load_spikedata_from_hdf5(path).N == 3


def test_unit_indices_beyond_the_unit_limit_are_refused(tmp_path):
    path = tmp_path / "paired.h5"
    export_spikedata_to_hdf5(small(), path, style="paired")
    with h5py.File(path, "a") as f:
        f["idces"][0] = 2**40
        del f.attrs["N"]
    assert_load_error(lambda: load_spikedata_from_hdf5(path), str(path), "1048576 a loader")


@pytest.mark.parametrize("storage", ["contiguous", "chunked gzip"])
def test_a_dataset_declaring_more_than_the_file_holds_is_refused(tmp_path, storage):
    path = ragged_h5(tmp_path / "huge.h5")
    with h5py.File(path, "a") as f:
        del f["spike_times"]  # 10**12 float64 never written: 8 TB of fill values
        if storage == "contiguous":
            f.create_dataset("spike_times", shape=(10**12,), dtype="f8")
        else:
            f.create_dataset(
                "spike_times", shape=(10**12,), dtype="f8", chunks=(1 << 16,), compression="gzip"
            )
    message = assert_load_error(
        lambda: load_spikedata_from_hdf5(path), str(path), "'spike_times'", "8000000000000 bytes"
    )
    assert "stores 0 bytes" in message or "stores 0 compressed bytes" in message


def test_many_datasets_each_declaring_the_file_size_unwritten_are_refused(tmp_path):
    """Each fits in the file, but none is stored: together they would read back gigabytes."""
    path = tmp_path / "group.h5"
    export_spikedata_to_hdf5(small(), path, style="group")
    size = path.stat().st_size
    with h5py.File(path, "a") as f:
        for i in range(3):
            del f[f"units/{i}"]
            f["units"].create_dataset(str(i), shape=(size // 8,), dtype="f8")
            f[f"units/{i}"].attrs["unit"] = "s"
    assert_load_error(lambda: load_spikedata_from_hdf5(path), str(path), "'units/0'", "fill values")


def test_a_raster_decoding_to_absurd_spike_counts_is_refused(tmp_path):
    path = tmp_path / "raster.h5"
    export_spikedata_to_hdf5(small(), path, style="raster", raster_bin_size_ms=1.0)
    with h5py.File(path, "a") as f:
        del f["raster"]
        raster = f.create_dataset("raster", data=np.full((3, 10), 2**40, np.uint64))
        raster.attrs["bin_size_ms"] = 1.0
    assert_load_error(
        lambda: load_spikedata_from_hdf5(path), str(path), "'raster'", "decodes to more than"
    )
    with h5py.File(path, "a") as f:
        f["raster"][...] = 0
        f["raster"].attrs["bin_size_ms"] = -1.0
    assert_load_error(lambda: load_spikedata_from_hdf5(path), str(path), "'bin_size_ms'", "> 0")


def test_datasets_of_the_wrong_kind_name_the_dataset(tmp_path):
    path = ragged_h5(tmp_path / "kinds.h5")
    with h5py.File(path, "a") as f:
        del f["spike_times"]
        f["spike_times"] = np.array([b"a", b"b", b"c", b"d"])
        f["spike_times"].attrs["unit"] = "s"
    assert_load_error(lambda: load_spikedata_from_hdf5(path), "'spike_times'", "must hold numbers")
    with h5py.File(path, "a") as f:
        del f["spike_times"]
        f["spike_times"] = np.zeros(4)
        f["spike_times"].attrs["unit"] = "fortnights"
    assert_load_error(lambda: load_spikedata_from_hdf5(path), "'spike_times'", "fortnights")


def test_a_group_member_that_is_an_external_link_is_refused(tmp_path, outside):
    other = tmp_path / "outside" / "unit.h5"
    with h5py.File(other, "w") as f:
        f["t"] = np.frombuffer(SENTINEL[:32], "f8")
    path = tmp_path / "group.h5"
    export_spikedata_to_hdf5(small(), path, style="group")
    with h5py.File(path, "a") as f:
        del f["units/1"]
        f["units/1"] = h5py.ExternalLink(str(other), "/t")
    assert_load_error(lambda: load_spikedata_from_hdf5(path), str(path), "external link")


def test_a_huge_but_finite_length_loads_without_allocating(tmp_path):
    path = ragged_h5(tmp_path / "long.h5", length_ms=1e300)
    sd = within_deadline(lambda: load_spikedata_from_hdf5(path))
    assert sd.length == 1e300 and sd.N == 3
    ragged_h5(path, start_time=1e308, length_ms=1e308)  # the end overflows to inf
    assert_load_error(lambda: load_spikedata_from_hdf5(path), str(path), "overflows")


def test_corrupt_hdf5_bytes_give_only_load_errors(tmp_path):
    good = ragged_h5(tmp_path / "good.h5")
    data = good.read_bytes()
    rng = np.random.default_rng(3)
    bad = tmp_path / "bad.h5"
    outcomes = set()
    for i in range(40):
        damaged = bytearray(data)
        if i < 10:
            damaged = damaged[: len(data) * i // 10]  # truncated
        else:
            for at in rng.integers(0, len(data), 8):  # eight random bytes
                damaged[at] = int(rng.integers(0, 256))
        bad.write_bytes(bytes(damaged))
        try:
            load_spikedata_from_hdf5(bad)
            outcomes.add("loaded")
        except LoadError as exc:
            assert str(bad) in str(exc)
            outcomes.add("LoadError")
    assert "LoadError" in outcomes


# ------------------------------------------------------------------------------ NWB corpus
def nwb_file(path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_spikedata_to_nwb(small(), path)
    return path


@pytest.mark.parametrize("prefer_pynwb", [True, False])
@pytest.mark.parametrize("breakage", ["external link", "external storage", "virtual dataset"])
def test_nwb_files_reaching_outside_are_refused_by_both_readers(
    tmp_path, outside, fifo, prefer_pynwb, breakage
):
    path = nwb_file(tmp_path / "rec.nwb")
    with h5py.File(path, "a") as f:
        if breakage == "external link":  # anywhere: pynwb reads every object
            f["acquisition/elsewhere"] = h5py.ExternalLink(str(fifo), "/x")
            fragment = "external link"
        elif breakage == "external storage":
            del f["units/spike_times_index"]
            f["units"].create_dataset(
                "spike_times_index", shape=(3,), dtype="i8", external=[(str(outside), 0, 24)]
            )
            fragment = "external file"
        else:
            layout = h5py.VirtualLayout(shape=(3,), dtype="i8")
            layout[:] = h5py.VirtualSource(str(outside), "x", shape=(3,))
            del f["units/spike_times_index"]
            f["units"].create_virtual_dataset("spike_times_index", layout)
            fragment = "virtual dataset"
    assert_load_error(
        lambda: load_spikedata_from_nwb(path, prefer_pynwb=prefer_pynwb),
        str(path),
        fragment,
        fifos=(fifo,),
    )


def test_an_object_reference_to_an_unnamed_dataset_is_refused(tmp_path, outside):
    path = nwb_file(tmp_path / "ref.nwb")
    with h5py.File(path, "a") as f:
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_external(str(outside).encode(), 0, 64)
        space = h5py.h5s.create_simple((8,))
        anonymous = h5py.h5d.create(f.id, None, h5py.h5t.NATIVE_DOUBLE, space, dcpl=dcpl)
        f["units"].attrs["hidden"] = h5py.Dataset(anonymous).ref
    for prefer_pynwb in (True, False):
        assert_load_error(
            lambda: load_spikedata_from_nwb(path, prefer_pynwb=prefer_pynwb),  # noqa: B023
            str(path),
            "no link names",
        )


@pytest.mark.parametrize(
    ("state", "fragment"),
    [
        ("{broken", "not readable JSON"),
        ("[" * 100_000, "too deeply"),
        ({"format": "spikelab", "version": 1}, "lacks 'N'"),
        ({"N": "three"}, "'N' must be a finite number"),
        ({"N": 10**12}, "'N' must be a number of units"),
        ({"length_ms": 1e308, "start_time_ms": 1e308}, "overflow"),
        ({"version": "new"}, "'version' must be an integer"),
        ({"neuron_attributes": [1, 2, 3]}, "list of objects"),
        ({"metadata": [1]}, "'metadata' must be an object"),
    ],
)
@pytest.mark.parametrize("prefer_pynwb", [True, False])
def test_a_malformed_spikelab_state_names_the_file_and_the_field(
    tmp_path, state, fragment, prefer_pynwb
):
    path = nwb_file(tmp_path / "state.nwb")
    with h5py.File(path, "a") as f:
        text = f["scratch/spikelab"][()].decode()
        if isinstance(state, dict):
            full = json.loads(text)
            state = json.dumps(state if state.get("format") else {**full, **state})
        attrs = dict(f["scratch/spikelab"].attrs)  # keep its NWB type: pynwb must read it
        del f["scratch/spikelab"]
        f["scratch/spikelab"] = state
        f["scratch/spikelab"].attrs.update(attrs)
    assert_load_error(
        lambda: load_spikedata_from_nwb(path, prefer_pynwb=prefer_pynwb),
        str(path),
        "SpikeLab state",
        fragment,
    )


def test_nwb_paths_that_are_not_nwb_files(tmp_path):
    text = tmp_path / "notes.nwb"
    text.write_bytes(SENTINEL)
    assert_load_error(lambda: load_spikedata_from_nwb(text), str(text), "not an NWB/HDF5 file")
    plain = tmp_path / "plain.h5"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_spikedata_to_nwb(small(), plain, group="spikes")
    with h5py.File(plain, "a") as f:
        f["spikes"].attrs["spikelab"] = "{"
    assert_load_error(
        lambda: load_spikedata_from_nwb(plain, group="spikes"), str(plain), "not readable JSON"
    )


# ------------------------------------------------------------------------------ KiloSort corpus
@pytest.fixture
def ks(tmp_path) -> Path:
    folder = tmp_path / "ks"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_spikedata_to_kilosort(small(), folder, fs_Hz=FS)
    return folder


def npy_with_header(path: Path, header: str, data: bytes = b"") -> None:
    """A .npy file of version 1.0 with the header text ``header`` (padded) and ``data``."""
    body = header.encode("latin1")
    pad = 64 - (10 + len(body) + 1) % 64
    body += b" " * pad + b"\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body + data)


@pytest.mark.parametrize(
    ("name", "build", "fragments"),
    [
        (
            "spike_times.npy",
            lambda p: npy_with_header(
                p, "{'descr': '<i8', 'fortran_order': False, 'shape': (1000000000000,), }"
            ),
            ["declares shape (1000000000000,)", "8000000000000 bytes", "0 bytes of data"],
        ),
        (
            "spike_clusters.npy",
            lambda p: np.save(p, np.array([{"x": 1}] * 4, dtype=object), allow_pickle=True),
            ["spike clusters", "Python objects"],
        ),
        (
            "spike_times.npy",
            lambda p: p.write_bytes(p.read_bytes()[:-9]),
            ["spike times", "declares shape (4,)", "truncated"],
        ),
        (
            "spike_times.npy",
            lambda p: npy_with_header(
                p, "{'descr': '<i8', 'fortran_order': False, 'shape': (2, 2), }", b"\0" * 32
            ),
            ["expected one value per spike"],
        ),
        (
            "spike_times.npy",
            lambda p: npy_with_header(
                p, "{'descr': [('a', '<i8')], 'fortran_order': False, 'shape': (4,), }", b"\0" * 32
            ),
            ["not a number type"],
        ),
        (
            "spike_times.npy",
            lambda p: npy_with_header(
                p,
                "{'descr': '<i8', 'fortran_order': False, 'shape': "
                + "(" * 5000
                + "4"
                + ")" * 5000
                + ", }",
            ),
            ["not a readable .npy"],
        ),
        ("spike_times.npy", lambda p: np.save(p, np.full(4, 2**63 + 5, np.uint64)), ["int64"]),
        (
            "spike_clusters.npy",
            lambda p: np.save(p, np.full(4, 2**64 - 1, np.uint64)),
            ["cluster ids must be int64"],
        ),
    ],
)
def test_npy_headers_are_checked_before_anything_is_allocated(ks, name, build, fragments):
    build(ks / name)
    assert_load_error(lambda: load_spikedata_from_kilosort(ks), str(ks / name), *fragments)


@pytest.mark.parametrize(
    ("name", "content", "fragments"),
    [
        ("spikelab.json", "{", ["not readable JSON"]),
        ("spikelab.json", "[" * 100_000, ["too deeply"]),
        ("spikelab.json", b"\xff\xfe{}", ["UTF-8"]),
        ("params.py", "sample_rate = " + "(" * 100_000, ["not a readable params.py"]),
        ("cluster_info.tsv", b"\x00\xff\xfe garbage \xc3", ["UTF-8"]),
        ("cluster_info.tsv", f"cluster_id\tgroup\n{10**30}\tgood\n", ["outside int64"]),
        ("cluster_info.tsv", "cluster_id\tgroup\nseven\tgood\n", ["no integer cluster_id"]),
        ("cluster_info.tsv", "cluster_id\tgroup\n" + "x" * 200_000 + "\n", ["not a readable"]),
    ],
)
def test_malformed_text_files_name_the_file(ks, name, content, fragments):
    target = ks / name
    if name == "cluster_info.tsv":
        (ks / "cluster_group.tsv").unlink()
    target.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert_load_error(lambda: load_spikedata_from_kilosort(ks), str(target), *fragments)


@pytest.mark.parametrize(
    ("name", "size", "limit"),
    [
        ("params.py", 50 << 20, files.PARAMS_MAX_BYTES),
        ("cluster_info.tsv", files.TABLE_MAX_BYTES + 1, files.TABLE_MAX_BYTES),
        ("spikelab.json", files.SIDE_FILE_MAX_BYTES + 1, files.SIDE_FILE_MAX_BYTES),
    ],
)
def test_text_files_beyond_their_size_limit_are_refused_unread(ks, name, size, limit):
    with open(ks / name, "wb") as fh:  # sparse: costs no disk and no time
        fh.truncate(size)
    assert_load_error(
        lambda: load_spikedata_from_kilosort(ks), str(ks / name), f"{size} bytes", str(limit)
    )


@pytest.mark.parametrize(("limit", "value"), [("MAX_UNITS", 5), ("TABLE_MAX_CELLS", 11)])
def test_cluster_tables_beyond_their_row_or_cell_limit_are_refused(ks, monkeypatch, limit, value):
    import spikelab.formats.kilosort.read as kilosort_read

    monkeypatch.setattr(kilosort_read, limit, value)  # 6 rows of 2 cells
    (ks / "cluster_info.tsv").unlink()
    rows = "".join(f"{i}\tgood\n" for i in range(6))
    (ks / "cluster_group.tsv").write_text("cluster_id\tgroup\n" + rows)
    assert_load_error(
        lambda: load_spikedata_from_kilosort(ks), str(ks / "cluster_group.tsv"), f"{value}"
    )


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("sample_offset", 1e300, "sample_offset must be an integer"),
        ("sample_offset", 2**70, "sample_offset must be an integer"),
        ("sample_offset", -(2**63) + 10, "leave the int64 range"),
        ("sample_offset", "many", "sample_offset must be a number"),
        ("length_ms", 1e308, "overflows"),
        ("neuron_attributes", "none", "neuron_attributes must be a list"),
    ],
)
def test_malformed_side_file_fields_name_the_file_and_the_field(ks, field, value, fragment):
    side = json.loads((ks / "spikelab.json").read_text())
    side[field] = value
    if field == "length_ms":
        side["start_time_ms"] = 1e308
    (ks / "spikelab.json").write_text(json.dumps(side))
    message = assert_load_error(lambda: load_spikedata_from_kilosort(ks), str(ks), fragment)
    assert field in message


def test_a_huge_but_finite_length_in_the_side_file_loads_without_allocating(ks):
    side = json.loads((ks / "spikelab.json").read_text())
    side["length_ms"] = 1e300
    (ks / "spikelab.json").write_text(json.dumps(side))
    assert within_deadline(lambda: load_spikedata_from_kilosort(ks)).length == 1e300


@pytest.mark.parametrize("name", ["spike_times.npy", "params.py", "spikelab.json"])
def test_fifos_and_devices_inside_the_folder_are_refused_at_once(ks, tmp_path, name):
    (ks / name).unlink()
    os.mkfifo(ks / name)
    assert_load_error(
        lambda: load_spikedata_from_kilosort(ks), str(ks / name), "FIFO", fifos=(ks / name,)
    )
    (ks / name).unlink()
    (ks / name).symlink_to("/dev/zero")  # endless bytes
    assert_load_error(lambda: load_spikedata_from_kilosort(ks), str(ks / name), "character device")


def test_a_folder_path_that_is_a_fifo_or_a_file_is_refused(tmp_path, fifo):
    assert_load_error(lambda: load_spikedata_from_kilosort(fifo), str(fifo), "FIFO")
    (tmp_path / "file").write_text("x")
    assert_load_error(lambda: load_spikedata_from_kilosort(tmp_path / "file"), "not a KiloSort")


def test_corrupt_npy_bytes_give_only_load_errors(ks):
    data = (ks / "spike_times.npy").read_bytes()
    rng = np.random.default_rng(5)
    for i in range(60):
        damaged = bytearray(data)
        for at in rng.integers(0, 128, 3):  # the header
            damaged[at] = int(rng.integers(0, 256))
        (ks / "spike_times.npy").write_bytes(bytes(damaged[: len(data) - (i % 3) * 8]))
        try:
            load_spikedata_from_kilosort(ks)
        except LoadError as exc:
            assert str(ks) in str(exc)


# ------------------------------------------------------------------------------ exporters
def far_spike() -> SpikeData:
    return SpikeData([[1.0], [2.0, 1e18]], length=1e18 + 10.0)


@pytest.mark.parametrize(
    ("kwargs", "unit_key"),
    [
        ({"spike_times_unit": "samples"}, "spike_times_unit"),
        ({"style": "group", "group_time_unit": "samples"}, "group_time_unit"),
        ({"style": "paired", "times_unit": "samples"}, "times_unit"),
    ],
)
def test_hdf5_samples_beyond_int64_are_refused_before_any_file(tmp_path, kwargs, unit_key):
    out = tmp_path / "out" / "far.h5"
    with pytest.raises(ExportError) as err:
        export_spikedata_to_hdf5(far_spike(), out, fs_Hz=FS, **kwargs)
    message = str(err.value)
    assert type(err.value) is ExportError
    for fragment in ("unit 1", "1e+18 ms", "2e+19 samples", "fs_Hz=20000 Hz", unit_key):
        assert fragment in message, (fragment, message)
    assert not (tmp_path / "out").exists()


def test_hdf5_raw_time_in_samples_beyond_int64_is_refused(tmp_path):
    sd = SpikeData([[1.0]], length=2.0, raw_data=np.zeros((1, 2)), raw_time=[0.0, 1e300])
    with pytest.raises(ExportError, match=r"raw_time: time 1e\+300 ms .*raw_time_unit"):
        export_spikedata_to_hdf5(
            sd,
            tmp_path / "r.h5",
            raw_dataset="raw",
            raw_time_dataset="t",
            raw_time_unit="samples",
            fs_Hz=FS,
        )
    assert list(tmp_path.iterdir()) == []


def test_kilosort_samples_beyond_int64_are_refused_before_any_folder(tmp_path):
    with pytest.raises(ExportError, match=r"unit 1: time 1e\+18 ms is 2e\+19 samples at fs_Hz"):
        export_spikedata_to_kilosort(far_spike(), tmp_path / "ks", fs_Hz=FS)
    shifted = SpikeData([[-4e17, 4e17]], start_time=-4.6e17, length=9.2e17)  # shift 9.2e18
    with pytest.raises(ExportError, match="sample_offset"):
        export_spikedata_to_kilosort(shifted, tmp_path / "ks", fs_Hz=FS)
    with pytest.raises(ExportError, match="start_time"):
        export_spikedata_to_kilosort(
            SpikeData([[]], start_time=-1e300, length=1.0), tmp_path / "ks", fs_Hz=FS
        )
    assert list(tmp_path.iterdir()) == []
    export_spikedata_to_kilosort(far_spike(), tmp_path / "ks", fs_Hz=FS, time_unit="ms")
    assert load_spikedata_from_kilosort(tmp_path / "ks", time_unit="ms").train[1][-1] == 1e18


def test_a_raster_of_an_absurd_length_is_refused_with_its_arithmetic(tmp_path):
    out = tmp_path / "out" / "raster.h5"
    tiny = SpikeData([[1.0, 2.0]], length=100.0)  # first: without the limit this is quick too
    with pytest.raises(ExportError, match="100 cells exceeds raster_max_cells=99"):
        export_spikedata_to_hdf5(
            tiny, out, style="raster", raster_bin_size_ms=1.0, raster_max_cells=99
        )
    assert not (tmp_path / "out").exists()
    sd = SpikeData([[1.0]] * 8, length=1e12)
    with pytest.raises(ExportError) as err:
        export_spikedata_to_hdf5(sd, out, style="raster", raster_bin_size_ms=1.0)
    message = str(err.value)
    for fragment in (
        "length 1e+12 ms / bin 1 ms = 1,000,000,000,000 bins per unit x 8 units",
        "8,000,000,000,000 cells exceeds raster_max_cells=68,719,476,736",
    ):
        assert fragment in message
    assert not (tmp_path / "out").exists()
    export_spikedata_to_hdf5(
        tiny, out, style="raster", raster_bin_size_ms=1.0, raster_max_cells=100
    )
    assert load_spikedata_from_hdf5(out).train[0].tolist() == [1.0, 2.0]


def test_a_too_narrow_raster_dtype_is_refused_instead_of_wrapping(tmp_path):
    sd = SpikeData([np.full(300, 5.0)], length=10.0)
    with pytest.raises(ExportError, match="holds counts up to 255, but a bin of 1 ms holds 300"):
        export_spikedata_to_hdf5(
            sd, tmp_path / "r.h5", style="raster", raster_bin_size_ms=1.0, raster_dtype="uint8"
        )
    assert list(tmp_path.iterdir()) == []


def test_nwb_refuses_a_recording_whose_end_is_not_finite(tmp_path):
    sd = SpikeData([[]], start_time=1e308, length=1e308)
    with pytest.raises(ExportError, match="not a finite time"):
        export_spikedata_to_nwb(sd, tmp_path / "x.nwb")
    assert list(tmp_path.iterdir()) == []


def test_long_raster_rows_are_written_and_read_in_column_blocks(tmp_path, monkeypatch):
    from spikelab.formats.hdf5 import layout

    rng = np.random.default_rng(1)
    sd = SpikeData(
        [np.sort(rng.uniform(0, 5000, n)) for n in (300, 0, 1, 2000)],
        length=5000.0,
    )
    whole = tmp_path / "whole.h5"
    export_spikedata_to_hdf5(sd, whole, style="raster", raster_bin_size_ms=0.5)
    monkeypatch.setattr(layout, "RASTER_BLOCK_BYTES", 2048)  # rows of 10 000 bins
    blocks = tmp_path / "blocks.h5"
    export_spikedata_to_hdf5(sd, blocks, style="raster", raster_bin_size_ms=0.5)
    with h5py.File(whole) as a, h5py.File(blocks) as b:
        np.testing.assert_array_equal(a["raster"][()], b["raster"][()])
    monkeypatch.setattr(layout, "RASTER_READ_MAX_BYTES", 4096)
    split = load_spikedata_from_hdf5(blocks)
    monkeypatch.undo()
    for a, b in zip(load_spikedata_from_hdf5(whole).train, split.train, strict=True):
        assert a.tobytes() == b.tobytes()
    assert sum(t.size for t in split.train) == 2301


# ------------------------------------------------------------------------------ no other error
def test_no_loader_raises_anything_but_load_error_on_the_corpus(tmp_path):
    """A sweep of small broken inputs through all three loaders."""
    cases = []
    for i, blob in enumerate([b"", b"\x89HDF\r\n\x1a\n", b"\x89HDF\r\n\x1a\n" + bytes(500)]):
        p = tmp_path / f"blob{i}.h5"
        p.write_bytes(blob)
        cases += [lambda p=p: load_spikedata_from_hdf5(p), lambda p=p: load_spikedata_from_nwb(p)]
    folder = tmp_path / "empty_ks"
    folder.mkdir()
    cases.append(lambda: load_spikedata_from_kilosort(folder))
    shutil.copytree(folder, tmp_path / "params_only")
    (tmp_path / "params_only" / "params.py").write_text("sample_rate = 1e-300\n")
    np.save(tmp_path / "params_only" / "spike_times.npy", np.array([1, 2**62]))
    np.save(tmp_path / "params_only" / "spike_clusters.npy", np.array([0, 2**62]))
    cases.append(lambda: load_spikedata_from_kilosort(tmp_path / "params_only"))
    for case in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(LoadError):
                case()
