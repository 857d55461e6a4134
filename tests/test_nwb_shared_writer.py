"""The NWB writer's per-process pieces (one TypeMap, the cached specification copied from a
template): every file is what pynwb writes by default, and nothing of one file reaches the next.

Real files, compared object by object with pynwb's default write of the same recording.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from spikelab.formats.nwb import FORMAT, export_spikedata_to_nwb, load_spikedata_from_nwb
from spikelab.formats.nwb import write as nwb_write
from spikelab.isolation import available, run_isolated
from spikelab.spikedata import SpikeData
from tests.spikedata_factories import fixture

SUBJECT = {"subject_id": "mouse-01", "species": "Mus musculus", "sex": "F", "age": "P90D"}
START = "2024-05-01T10:00:00+02:00"


def _rich() -> SpikeData:
    """12 units on dense electrode ids, every column type, coordinates, nested metadata."""
    rng = np.random.default_rng(3)
    return SpikeData(
        [np.sort(rng.uniform(0, 2000.0, rng.integers(0, 40))) for _ in range(12)],
        length=2000.0,
        metadata={"fs_Hz": 25000.0, "probe": {"name": "np1", "shanks": [1, 2]}},
        neuron_attributes=[
            {
                "cluster_id": 100 + 3 * i,
                "quality": "good" if i % 3 else "mua",
                "snr": 1.5 * i,
                "is_curated": bool(i % 2),
                "electrode": 5 * i,
                "location": [10.0 * i, 20.0],
            }
            for i in range(12)
        ],
    )


def _other() -> SpikeData:
    """Two units, no electrode, other columns, a negative start: nothing in common with
    :func:`_rich` but the Units table."""
    return SpikeData(
        [[-40.0, 3.5], [7.25]],
        start_time=-50.0,
        length=100.0,
        metadata={"fs_Hz": 30000.0},
        neuron_attributes=[{"depth_um": 12.5}, {"depth_um": 80.0}],
    )


RECORDINGS = {
    "small": lambda: fixture("small"),
    "neg_start": lambda: fixture("neg_start"),
    "empty_units": lambda: fixture("empty_units"),
    "zero_units": lambda: SpikeData([], length=100.0, metadata={"fs_Hz": 30000.0}),
    "rich": _rich,
    "other": _other,
    "sparse_electrodes": lambda: SpikeData(
        [[1.0], [2.0]],
        length=5.0,
        neuron_attributes=[{"electrode": 9000}, {"electrode": 26399}],
    ),
}


def export(sd: SpikeData, path: Path, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_spikedata_to_nwb(sd, path, session_start_time=START, **SUBJECT, **kwargs)
    return path


def export_plain(sd: SpikeData, path: Path, monkeypatch, **kwargs) -> Path:
    """The same export, written by pynwb's default write (a TypeMap copy and hdmf caching the
    specification, for this file alone)."""
    with monkeypatch.context() as m:
        m.setattr(nwb_write, "_write_nwbfile", nwb_write._write_nwbfile_plain)
        return export(sd, path, **kwargs)


def tree(path: Path) -> dict:
    """Every object of the file: its kind, attributes, and for a dataset its type, shape,
    layout, filters and value bytes; references as the names they point to. Object ids and the
    creation date (new ones in every file) are left out."""
    out = {}
    with h5py.File(path, "r") as f:

        def value(v):
            if isinstance(v, h5py.Reference):
                return ("ref", f[v].name)
            v = np.asarray(v)
            if v.dtype.kind == "O":
                return ("obj", repr([value(x) for x in v.ravel()]), v.shape)
            return (v.dtype.str, v.shape, v.tobytes())

        def visit(name, obj):
            attrs = {k: value(v) for k, v in obj.attrs.items() if k != "object_id"}
            if isinstance(obj, h5py.Group):
                out[name] = ("group", attrs)
                return
            dcpl = obj.id.get_create_plist()
            data = None if name == "file_create_date" else value(obj[()])
            out[name] = (
                "dataset",
                attrs,
                obj.id.get_type().dtype,
                h5py.check_string_dtype(obj.dtype),
                obj.shape,
                obj.maxshape,
                dcpl.get_layout(),
                obj.chunks,
                obj.compression,
                data,
            )

        visit("/", f)
        f.visititems(visit)
    return out


def object_ids(path: Path) -> set[str]:
    ids = set()
    with h5py.File(path, "r") as f:
        f.visititems(lambda _, obj: ids.add(obj.attrs.get("object_id")))
        ids.add(f.attrs["object_id"])
    return ids - {None}


def cached_specification(path: Path) -> dict[str, tuple]:
    """Each document of the file's cached specification (``.specloc``): its HDF5 type (class,
    variable length, character set), shape and stored bytes."""
    found = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            htype = obj.id.get_type()
            kind = (htype.get_class(), htype.is_variable_str(), htype.get_cset())
            found[name] = (kind, obj.shape, bytes(obj[()]))

    with h5py.File(path, "r") as f:
        group = f[f.attrs[".specloc"]]
        assert group.name == "/specifications"
        group.visititems(visit)
    return found


@pytest.mark.parametrize("name", sorted(RECORDINGS))
def test_each_file_is_what_pynwb_writes_by_default_but_its_object_ids(tmp_path, monkeypatch, name):
    sd = RECORDINGS[name]()
    ours = export(sd, tmp_path / "ours" / f"{name}.nwb")
    plain = export_plain(sd, tmp_path / "plain" / f"{name}.nwb", monkeypatch)
    assert tree(ours) == tree(plain)


def test_gzip_file_is_what_pynwb_writes_by_default(tmp_path, monkeypatch):
    sd = fixture("small")
    ours = export(sd, tmp_path / "ours" / "small.nwb", compression="gzip")
    plain = export_plain(sd, tmp_path / "plain" / "small.nwb", monkeypatch, compression="gzip")
    assert tree(ours) == tree(plain)


def test_cached_specification_is_byte_for_byte_pynwbs_and_loads_back(tmp_path, monkeypatch):
    from pynwb import NWBHDF5IO, validate

    sd = fixture("small")
    ours = export(sd, tmp_path / "ours" / "small.nwb")
    plain = export_plain(sd, tmp_path / "plain" / "small.nwb", monkeypatch)
    specs = {path: cached_specification(path) for path in (ours, plain)}
    namespaces = {name.split("/")[0] for name in specs[ours]}
    assert namespaces == {"core", "hdmf-common", "hdmf-experimental"}
    assert specs[ours] == specs[plain]
    assert NWBHDF5IO.get_namespaces(path=str(ours)) == NWBHDF5IO.get_namespaces(path=str(plain))
    with NWBHDF5IO(str(ours), "r", load_namespaces=True) as io:
        nwb = io.read()
        assert len(nwb.units) == sd.N
        assert set(io.manager.namespace_catalog.namespaces) >= {"core", "hdmf-common"}
    assert validate(path=str(ours), use_cached_namespaces=True) == []


def test_a_second_recording_holds_nothing_of_the_first_written_before_it(tmp_path, monkeypatch):
    """The same process writes a 12-unit recording with electrodes and then a 2-unit one
    without: the second file is exactly pynwb's default write of the second recording (no
    electrodes table, none of the first's columns, units, values or object ids), and writing
    the first again gives its first file."""
    from nwbinspector import inspect_nwbfile

    rich, other = _rich(), _other()
    first = export(rich, tmp_path / "a" / "rec.nwb", lab="lab A")
    second = export(other, tmp_path / "b" / "rec.nwb")
    again = export(rich, tmp_path / "c" / "rec.nwb", lab="lab A")
    alone = export_plain(other, tmp_path / "plain" / "rec.nwb", monkeypatch)

    assert tree(second) == tree(alone)
    assert tree(again) == tree(first)
    assert not object_ids(second) & object_ids(first)
    assert not object_ids(again) & object_ids(first)
    with h5py.File(second, "r") as f:
        assert "extracellular_ephys" not in f["general"]
        assert "devices" not in f["general"]
        assert "lab" not in f["general"]
        assert list(f["units"].attrs["colnames"]) == [
            "spike_times",
            "obs_intervals",
            "unit_name",
            "depth_um",
        ]
        assert f["units/id"][()].tolist() == [0, 1]
    back = load_spikedata_from_nwb(second, prefer_pynwb=True)
    assert (back.N, back.start_time, back.length) == (2, -50.0, 100.0)
    assert back.neuron_attributes == other.neuron_attributes
    found = inspect_nwbfile(nwbfile_path=second)
    assert [m for m in found if m.importance.name in ("CRITICAL", "ERROR")] == []


@pytest.mark.skipif(not available(), reason="needs fork")
def test_a_forked_child_writes_with_the_writer_its_parent_made_in_the_warm_up(
    tmp_path, monkeypatch
):
    """Batch jobs warm the format up and then fork a child per recording: the child's file,
    written with the parent's TypeMap and specification template, is pynwb's default one."""
    FORMAT.warm_up({})
    assert nwb_write._shared is not None
    sd = _rich()
    child = tmp_path / "child" / "rec.nwb"
    assert run_isolated(lambda: str(export(sd, child))) == str(child)
    plain = export_plain(sd, tmp_path / "plain" / "rec.nwb", monkeypatch)
    assert tree(child) == tree(plain)


def test_no_object_of_a_written_file_stays_alive_in_the_process(tmp_path):
    """The builders of a file and the NWB objects they came from (with the spike data) are
    released once the file is written: a batch of recordings neither grows the process nor
    keeps anything a later file could be built from."""
    import gc

    from hdmf.build import BuildManager, GroupBuilder
    from pynwb import NWBFile

    def alive(kind) -> int:
        gc.collect()
        return sum(isinstance(obj, kind) for obj in gc.get_objects())

    export(fixture("small"), tmp_path / "warm.nwb")  # the process's writer exists from here on
    before = {kind: alive(kind) for kind in (NWBFile, BuildManager, GroupBuilder)}
    for i in range(3):
        export(_rich(), tmp_path / f"rec{i}.nwb")
    assert {kind: alive(kind) for kind in before} == before
