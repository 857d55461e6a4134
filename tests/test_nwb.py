"""NWB export and import: round trips, schema validity, nwbinspector, SpikeInterface, atomicity.

Real files in tmp_path, real readers (pynwb, h5py, nwbinspector, SpikeInterface), no mocks.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import h5py
import numpy as np
import pytest

from spikelab.formats.errors import ExportError, LoadError
from spikelab.formats.nwb import export_spikedata_to_nwb, load_spikedata_from_nwb
from spikelab.formats.nwb.options import SessionStartUnknownWarning
from spikelab.formats.pickle_io import load_spikedata_from_pickle
from spikelab.spikedata import SpikeData

DATA = Path(__file__).parent / "data"
FIXTURES = ["small", "empty_units", "neg_start"]
SUBJECT = {"subject_id": "mouse-01", "species": "Mus musculus", "sex": "F", "age": "P90D"}
START = "2024-05-01T10:00:00+02:00"


def fixture(name: str) -> SpikeData:
    return load_spikedata_from_pickle(DATA / f"{name}.pkl")


def export(sd: SpikeData, path: Path, **kwargs) -> Path:
    """Export; the 'sampling rate unknown' and placeholder session start warnings are pinned in
    their own tests."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*sampling rate unknown", category=UserWarning)
        warnings.filterwarnings("ignore", category=SessionStartUnknownWarning)
        export_spikedata_to_nwb(sd, path, **kwargs)
    return path


def assert_same_spikedata(expected: SpikeData, got: SpikeData) -> None:
    assert got.N == expected.N
    assert got.start_time == expected.start_time
    assert got.length == expected.length
    assert got.metadata == expected.metadata
    assert got.neuron_attributes == expected.neuron_attributes
    # The file holds seconds: t_ms / 1000 * 1000 is within an ulp or so of t_ms but cannot be
    # bit-exact for every double. With start_time < 0 the times are also shifted by -start_time
    # (NWB times must not be negative), which costs a few ulps of the recording's span instead.
    span = max(abs(expected.start_time), abs(expected.end_time), expected.length)
    atol = 0.0 if expected.start_time >= 0 else 4 * np.spacing(span)
    for unit, (a, b) in enumerate(zip(expected.train, got.train, strict=True)):
        np.testing.assert_allclose(b, a, rtol=1e-15, atol=atol, err_msg=f"unit {unit}")


def roundtrip_both_readers(sd: SpikeData, path: Path) -> SpikeData:
    """Load with pynwb and with h5py: the two must agree bit for bit; return one of them."""
    via_pynwb = load_spikedata_from_nwb(path, prefer_pynwb=True)
    via_h5py = load_spikedata_from_nwb(path, prefer_pynwb=False)
    assert via_pynwb.N == via_h5py.N
    assert (via_pynwb.start_time, via_pynwb.length) == (via_h5py.start_time, via_h5py.length)
    assert via_pynwb.metadata == via_h5py.metadata
    assert via_pynwb.neuron_attributes == via_h5py.neuron_attributes
    for a, b in zip(via_pynwb.train, via_h5py.train, strict=True):
        assert np.array_equal(a, b)
    assert_same_spikedata(sd, via_pynwb)
    return via_pynwb


def schema_errors(path: Path) -> list:
    import pynwb

    return pynwb.validate(path=str(path))


# ----------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("name", FIXTURES)
@pytest.mark.parametrize("prefer_pynwb", [True, False])
def test_fixture_roundtrip_keeps_trains_n_start_length_metadata_attributes(
    tmp_path, name, prefer_pynwb
):
    sd = fixture(name)
    path = export(sd, tmp_path / f"{name}.nwb")
    assert_same_spikedata(sd, load_spikedata_from_nwb(path, prefer_pynwb=prefer_pynwb))


def _synthetic() -> dict[str, SpikeData]:
    rng = np.random.default_rng(7)
    twelve = [np.sort(rng.uniform(0, 2000.0, rng.integers(0, 40))) for _ in range(12)]
    return {
        "empty_units": SpikeData(
            [[], [1.5, 2.25, 2.25], []], length=5.0, metadata={"fs_Hz": 20000.0}
        ),
        "zero_units": SpikeData([], length=100.0, metadata={"fs_Hz": 30000.0}),
        "all_units_empty": SpikeData(
            [[], []], length=10.0, neuron_attributes=[{"cluster_id": 3}, {"cluster_id": 9}]
        ),
        "one_unit_one_spike": SpikeData([[0.123]], length=1.0, metadata={"fs_Hz": 30000.0}),
        "negative_start": SpikeData(
            [[-250.0, -249.999999, -1e-9, 0.0, 3e-7, 749.5], [-0.1]],
            start_time=-250.0,
            length=1000.0,
            metadata={"fs_Hz": 30000.0},
        ),
        "twelve_units": SpikeData(
            twelve,
            length=2000.0,
            metadata={"fs_Hz": 25000.0},
            neuron_attributes=[
                {
                    "cluster_id": 100 + 3 * i,
                    "quality": "good" if i % 3 else "mua",
                    "snr": 1.5 * i,
                    "is_curated": bool(i % 2),
                    "electrode": i // 2,
                    "location": [10.0 * (i // 2), 20.0],
                    "template": [0.1 * i, -0.2, 0.3],
                }
                for i in range(12)
            ],
        ),
        "nested_metadata": SpikeData(
            [[1.0, 2.0], [3.0]],
            length=4.0,
            metadata={
                "fs_Hz": 30000.0,
                "probe": {"name": "np1", "shanks": [1, 2], "geometry": {"pitch_um": 20.0}},
                "tags": ["a", "b"],
                "missing": None,
                "session_description": "two units on a bench",
            },
        ),
    }


SYNTHETIC = _synthetic()


@pytest.mark.parametrize("case", sorted(SYNTHETIC))
def test_synthetic_roundtrip_with_both_readers_and_valid_schema(tmp_path, case):
    sd = SYNTHETIC[case]
    path = export(sd, tmp_path / f"{case}.nwb")
    assert schema_errors(path) == []
    roundtrip_both_readers(sd, path)


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_exports_validate_against_the_nwb_schema(tmp_path, name):
    path = export(fixture(name), tmp_path / f"{name}.nwb")
    assert schema_errors(path) == []
    roundtrip_both_readers(fixture(name), path)


def test_zero_units_and_all_empty_units_write_an_empty_units_table(tmp_path):
    for case in ("zero_units", "all_units_empty"):
        sd = SYNTHETIC[case]
        path = export(sd, tmp_path / f"{case}.nwb")
        with h5py.File(path, "r") as f:
            assert f["units/spike_times"].shape == (0,)
            np.testing.assert_array_equal(f["units/spike_times_index"][()], np.zeros(sd.N))
            np.testing.assert_array_equal(f["units/id"][()], np.arange(sd.N))
            state = json.loads(f["scratch/spikelab"][()])
        assert state["N"] == sd.N


def test_units_table_holds_ids_names_resolution_intervals_and_electrode_rows(tmp_path):
    from pynwb import NWBHDF5IO

    sd = SYNTHETIC["twelve_units"]
    path = export(sd, tmp_path / "twelve.nwb")
    with NWBHDF5IO(str(path), "r") as io:
        nwb = io.read()
        units = nwb.units
        assert list(units.id[:]) == list(range(12))
        assert list(units["unit_name"][:]) == [str(100 + 3 * i) for i in range(12)]
        assert units.resolution == 1 / 25000.0
        for i in range(12):
            np.testing.assert_array_equal(units["spike_times"][i], sd.train[i] / 1000.0)
            np.testing.assert_array_equal(units["obs_intervals"][i], [[0.0, 2.0]])
        assert list(units["quality"][:]) == [a["quality"] for a in sd.neuron_attributes]
        assert list(units["snr"][:]) == [a["snr"] for a in sd.neuron_attributes]
        assert list(units["is_curated"][:]) == [a["is_curated"] for a in sd.neuron_attributes]
        assert "template" not in units.colnames and "location" not in units.colnames
        # Six distinct electrodes (two units each): one row each, the region holds row indices.
        electrodes = nwb.electrodes
        assert list(electrodes.id[:]) == [0, 1, 2, 3, 4, 5]
        assert list(electrodes["rel_x"][:]) == [0.0, 10.0, 20.0, 30.0, 40.0, 50.0]
        region_index = units["electrodes"]  # the VectorIndex over the DynamicTableRegion
        assert list(region_index.target.data[:]) == [i // 2 for i in range(12)]
        assert list(region_index.data[:]) == list(range(1, 13))


def test_electrodes_table_has_a_row_per_id_up_to_the_largest_so_rows_are_electrode_ids(tmp_path):
    from pynwb import NWBHDF5IO

    sd = fixture("small")  # electrodes 1, 11, ..., 71 with (x, y) locations
    path = export(sd, tmp_path / "small.nwb")
    with NWBHDF5IO(str(path), "r") as io:
        nwb = io.read()
        table = nwb.electrodes
        assert list(table.id[:]) == list(range(72))
        region = nwb.units["electrodes"].target
        assert list(region.data[:]) == list(sd.electrodes)  # row index == electrode id
        for axis, column in enumerate(("rel_x", "rel_y")):
            values = table[column].data[:]
            np.testing.assert_array_equal(values[sd.electrodes], sd.unit_locations[:, axis])
            assert np.isnan(np.delete(values, sd.electrodes)).all()  # no unit there
        assert "x" not in table.colnames  # NWB's x/y/z are brain coordinates


@pytest.mark.parametrize("ids", [[70000, 5, 70000], [-1, 4, 2]])
def test_electrode_ids_beyond_the_dense_range_get_one_row_per_distinct_id(tmp_path, ids):
    from pynwb import NWBHDF5IO

    attrs = [{"electrode": e, "location": [float(i), 0.0]} for i, e in enumerate(ids)]
    sd = SpikeData([[1.0]] * 3, length=2.0, neuron_attributes=attrs, metadata={"fs_Hz": 1e4})
    path = export(sd, tmp_path / "sparse.nwb")
    assert schema_errors(path) == []
    with NWBHDF5IO(str(path), "r") as io:
        nwb = io.read()
        assert list(nwb.electrodes.id[:]) == sorted(set(ids))
        rows = nwb.units["electrodes"].target.data[:]
        assert [nwb.electrodes.id[r] for r in rows] == ids
    roundtrip_both_readers(sd, path)


def test_root_attributes_hold_start_and_length_for_spikelab_0_1_2_in_nwb_time(tmp_path):
    for name, start in (("small", 0.0), ("neg_start", 0.0)):  # neg_start: shifted to NWB time
        sd = fixture(name)
        path = export(sd, tmp_path / f"{name}.nwb")
        with h5py.File(path, "r") as f:
            assert (f.attrs["start_time"], f.attrs["length_ms"]) == (start, sd.length)
        assert schema_errors(path) == []
    later = SpikeData([[150.0]], start_time=100.0, length=60.0, metadata={"fs_Hz": 1e4})
    with h5py.File(export(later, tmp_path / "later.nwb"), "r") as f:
        assert (f.attrs["start_time"], f.attrs["length_ms"]) == (100.0, 60.0)


def test_negative_start_time_is_shifted_so_nwb_times_are_not_negative(tmp_path):
    from pynwb import NWBHDF5IO

    sd = fixture("neg_start")
    path = export(sd, tmp_path / "neg.nwb", session_start_time=START)
    with NWBHDF5IO(str(path), "r") as io:
        nwb = io.read()
        times = nwb.units["spike_times"].target.data[:]
        assert times.min() >= 0
        np.testing.assert_allclose(times, (np.concatenate(sd.train) + 200.0) / 1000.0, rtol=1e-15)
        np.testing.assert_array_equal(nwb.units["obs_intervals"][0], [[0.0, 0.5]])
        assert nwb.session_start_time == datetime.fromisoformat(START)
        assert nwb.timestamps_reference_time == nwb.session_start_time - timedelta(milliseconds=200)
        state = json.loads(nwb.scratch["spikelab"].data)
    assert (state["start_time_ms"], state["length_ms"], state["time_offset_ms"]) == (
        -200.0,
        500.0,
        -200.0,
    )


def test_unsorted_unit_is_written_sorted(tmp_path):
    sd = SpikeData([[1.0, 2.0, 3.0], [4.0, 5.0]], length=10.0, metadata={"fs_Hz": 1000.0})
    sd.train[0] = np.array([3.0, 1.0, 2.0])  # mutated after construction
    path = export(sd, tmp_path / "unsorted.nwb")
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(
            f["units/spike_times"][()], [0.001, 0.002, 0.003, 0.004, 0.005]
        )


@pytest.mark.parametrize("compression", [None, "gzip"])
@pytest.mark.parametrize("start", [0.0, -200.0])
def test_spike_times_written_in_tiny_blocks_are_exact_and_valid(
    tmp_path, monkeypatch, compression, start
):
    import spikelab.formats.streaming as streaming

    rng = np.random.default_rng(4)
    sizes = [0, 3, 4, 0, 7, 0, 15, 2, 0, 5, 0]  # block 7: empty units at edges, a long unit
    train = [np.sort(rng.uniform(start, start + 900.0, n)) for n in sizes]
    sd = SpikeData(train, length=1000.0, start_time=start, metadata={"fs_Hz": 20000.0})
    export(sd, tmp_path / "a" / "rec.nwb", compression=compression)
    monkeypatch.setattr(streaming, "BLOCK_SPIKES", 7)
    path = export(sd, tmp_path / "b" / "rec.nwb", compression=compression)
    with h5py.File(path, "r") as f, h5py.File(tmp_path / "a" / "rec.nwb", "r") as whole:
        times = f["units/spike_times"][()]
        assert times.tobytes() == whole["units/spike_times"][()].tobytes()
        assert f["identifier"][()] == whole["identifier"][()]
    offset = min(start, 0.0)
    expected = np.concatenate([(t - offset) / 1000.0 if offset else t / 1000.0 for t in train])
    assert times.tobytes() == expected.tobytes()
    assert schema_errors(path) == []
    roundtrip_both_readers(sd, path)


def test_gzip_compression_keeps_the_trains(tmp_path):
    sd = fixture("small")
    path = export(sd, tmp_path / "gz.nwb", compression="gzip")
    with h5py.File(path, "r") as f:
        assert f["units/spike_times"].compression == "gzip"
    roundtrip_both_readers(sd, path)


def test_replacing_an_existing_file_leaves_no_temporary(tmp_path):
    path = tmp_path / "rec.nwb"
    path.write_bytes(b"an older export")
    export(fixture("small"), path)
    export(fixture("small"), path)
    assert [p.name for p in tmp_path.iterdir()] == ["rec.nwb"]
    assert_same_spikedata(fixture("small"), load_spikedata_from_nwb(path))


# ---------------------------------------------------------------------------- NWB metadata
def test_identifier_is_stable_per_recording_and_changes_with_content(tmp_path):
    from pynwb import NWBHDF5IO

    def identifier(path):
        with NWBHDF5IO(str(path), "r") as io:
            return io.read().identifier

    sd = fixture("small")
    a = identifier(export(sd, tmp_path / "a" / "rec.nwb"))
    b = identifier(export(sd, tmp_path / "b" / "rec.nwb"))
    other = identifier(export(fixture("empty_units"), tmp_path / "c" / "rec.nwb"))
    renamed = identifier(export(sd, tmp_path / "d" / "other.nwb"))
    chosen = identifier(export(sd, tmp_path / "e" / "rec.nwb", identifier="my-session-42"))
    nudged = fixture("small")
    nudged.train[3][5] = np.nextafter(nudged.train[3][5], np.inf)  # one spike, one ulp later
    moved = identifier(export(nudged, tmp_path / "f" / "rec.nwb"))
    assert a == b
    assert len({a, other, renamed, moved}) == 4
    assert chosen == "my-session-42"


def test_session_start_time_from_keyword_else_metadata_else_default(tmp_path):
    from pynwb import NWBHDF5IO

    def start(path):
        with NWBHDF5IO(str(path), "r") as io:
            return io.read().session_start_time

    meta_time = datetime(2023, 3, 4, 5, 6, 7, tzinfo=timezone(timedelta(hours=-7)))
    sd = SpikeData([[1.0]], length=2.0, metadata={"fs_Hz": 1e4, "session_start_time": meta_time})
    assert start(export(sd, tmp_path / "meta.nwb")) == meta_time
    assert start(
        export(sd, tmp_path / "kw.nwb", session_start_time=START)
    ) == datetime.fromisoformat(START)
    sd_iso = SpikeData([[1.0]], length=2.0, metadata={"session_start_time": START})
    assert start(export(sd_iso, tmp_path / "iso.nwb")) == datetime.fromisoformat(START)
    plain = SpikeData([[1.0]], length=2.0)
    with pytest.warns(SessionStartUnknownWarning, match="placeholder 2000-01-01T00:00:00"):
        export_spikedata_to_nwb(plain, tmp_path / "default.nwb", fs_Hz=1e4)
    assert start(tmp_path / "default.nwb") == datetime(2000, 1, 1, tzinfo=UTC)


def test_unknown_session_start_is_a_placeholder_said_so_in_notes_session_id_and_a_warning(
    tmp_path,
):
    from nwbinspector import inspect_nwbfile, load_config
    from pynwb import NWBHDF5IO

    sd = SpikeData([[1.0, 2.5]], length=3.0, metadata={"fs_Hz": 1e4, "origin": "bench"})
    path = tmp_path / "rec_start_time_7.nwb"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_spikedata_to_nwb(sd, path, **SUBJECT)
    (warning,) = [w for w in caught if issubclass(w.category, UserWarning)]
    assert warning.category is SessionStartUnknownWarning
    assert "placeholder 2000-01-01T00:00:00+00:00" in str(warning.message)
    # SpikeLab 0.1.2's tests refuse any export warning that says "start_time" (and a path may)
    assert "start_time" not in str(warning.message) and str(path) not in str(warning.message)
    with NWBHDF5IO(str(path), "r") as io:
        nwb = io.read()
        assert nwb.session_start_time == datetime(2000, 1, 1, tzinfo=UTC)
        assert nwb.notes.startswith("session_start_time is a placeholder (2000-01-01T00:00:00")
        assert nwb.session_id == "rec_start_time_7"
    for config in (None, load_config("dandi")):
        checks = {m.check_function_name for m in inspect_nwbfile(nwbfile_path=path, config=config)}
        assert not {c for c in checks if c.startswith("check_session_start_time")}
    assert load_spikedata_from_nwb(path).metadata == sd.metadata  # nothing added on reading

    dated = export(sd, tmp_path / "dated.nwb", session_start_time=START)
    with NWBHDF5IO(str(dated), "r") as io:
        nwb = io.read()
        assert (nwb.notes, nwb.session_id) == (None, None)


def _content(path: Path) -> dict:
    """Every attribute and dataset value of an HDF5 file, but the object ids and the creation
    date (and references, whose bytes are file addresses): what must not change between runs."""
    out = {}

    def canonical(value):
        value = np.asarray(value)
        return repr(value.tolist()) if value.dtype.kind == "O" else value.tobytes()

    def visit(name, obj):
        for key, value in obj.attrs.items():
            if key != "object_id" and not isinstance(value, h5py.Reference):
                out[f"{name}@{key}"] = canonical(value)
        if isinstance(obj, h5py.Dataset) and name != "file_create_date":
            if obj.dtype.kind != "O" or h5py.check_string_dtype(obj.dtype):
                out[name] = canonical(obj[()])

    with h5py.File(path, "r") as f:
        visit("/", f)
        f.visititems(visit)
    return out


@pytest.mark.parametrize("name", FIXTURES)
def test_same_recording_and_options_give_the_same_file_content(tmp_path, name):
    a = export(fixture(name), tmp_path / "a" / f"{name}.nwb")  # no session start: placeholder
    b = export(fixture(name), tmp_path / "b" / f"{name}.nwb")
    assert _content(a) == _content(b)


def test_subject_lab_institution_and_experimenter_are_written(tmp_path):
    from pynwb import NWBHDF5IO

    path = export(
        fixture("small"),
        tmp_path / "subject.nwb",
        lab="Hengen lab",
        institution="Washington University in St. Louis",
        experimenter=["Doe, Jane", "Roe, Richard"],
        session_description="organoid recording",
        **SUBJECT,
    )
    with NWBHDF5IO(str(path), "r") as io:
        nwb = io.read()
        assert (nwb.subject.subject_id, nwb.subject.species) == ("mouse-01", "Mus musculus")
        assert (nwb.subject.sex, nwb.subject.age) == ("F", "P90D")
        assert (nwb.lab, nwb.institution) == ("Hengen lab", "Washington University in St. Louis")
        assert tuple(nwb.experimenter) == ("Doe, Jane", "Roe, Richard")
        assert nwb.session_description == "organoid recording"


def test_subject_may_come_from_metadata_and_keywords_win(tmp_path):
    from pynwb import NWBHDF5IO

    sd = SpikeData(
        [[1.0]],
        length=2.0,
        metadata={"fs_Hz": 1e4, "subject": {"subject_id": "rat-7", "species": "Rattus norvegicus"}},
    )
    path = export(sd, tmp_path / "meta_subject.nwb", species="Mus musculus", sex="M")
    with NWBHDF5IO(str(path), "r") as io:
        subject = io.read().subject
        assert (subject.subject_id, subject.species, subject.sex) == ("rat-7", "Mus musculus", "M")
    assert load_spikedata_from_nwb(path).metadata == sd.metadata


# ------------------------------------------------------------------------------ peer readers
def _serious(messages) -> list[str]:
    return [
        f"{m.importance.name} {m.check_function_name}: {m.message}"
        for m in messages
        if m.importance.name in ("ERROR", "PYNWB_VALIDATION", "CRITICAL", "BEST_PRACTICE_VIOLATION")
    ]


@pytest.mark.parametrize("name", FIXTURES)
def test_nwbinspector_finds_nothing_serious_with_subject_and_rate_also_for_dandi(tmp_path, name):
    from nwbinspector import inspect_nwbfile, load_config

    path = export(
        fixture(name),
        tmp_path / f"{name}.nwb",
        fs_Hz=20000.0,
        session_start_time=START,
        electrode_location="CA1",  # an Allen CCF term: the species is a mouse
        **SUBJECT,
    )
    assert _serious(inspect_nwbfile(nwbfile_path=path)) == []
    assert _serious(inspect_nwbfile(nwbfile_path=path, config=load_config("dandi"))) == []


#: nwbinspector 0.7.2 crashes (an ERROR "During evaluation of ...") in these checks on a Units
#: table without a spike; see tests/test_nwb_zero_units.py.
_CRASHES_WITHOUT_SPIKES = {
    "check_col_not_nan",
    "check_table_values_for_dict",
    "check_units_table_duration",
}


@pytest.mark.parametrize("case", [f"fixture_{n}" for n in FIXTURES] + sorted(SYNTHETIC))
@pytest.mark.parametrize("config", ["default", "dandi"])
def test_nwbinspector_finds_nothing_critical_when_only_the_subject_is_given(tmp_path, case, config):
    """No session start, no rate, no electrode location: only the Subject fields."""
    from nwbinspector import inspect_nwbfile, load_config

    sd = fixture(case[8:]) if case.startswith("fixture_") else SYNTHETIC[case]
    path = export(sd, tmp_path / f"{case}.nwb", **SUBJECT)
    messages = inspect_nwbfile(
        nwbfile_path=path, config=load_config("dandi") if config == "dandi" else None
    )
    serious = []
    for m in messages:
        crash = m.check_function_name.removeprefix("During evaluation of '").split("'")[0]
        if m.importance.name in ("CRITICAL", "PYNWB_VALIDATION"):
            serious.append(m.check_function_name)
        elif m.importance.name == "ERROR" and not (
            crash in _CRASHES_WITHOUT_SPIKES and not any(t.size for t in sd.train)
        ):
            serious.append(m.check_function_name)
    assert serious == []


def test_nwbinspector_without_subject_or_rate_reports_exactly_those(tmp_path):
    from nwbinspector import inspect_nwbfile

    with pytest.warns(UserWarning, match="sampling rate unknown"):
        export_spikedata_to_nwb(fixture("neg_start"), tmp_path / "bare.nwb")
    found = {
        m.check_function_name
        for m in inspect_nwbfile(nwbfile_path=tmp_path / "bare.nwb")
        if m.importance.name in ("CRITICAL", "BEST_PRACTICE_VIOLATION")
    }
    assert found == {"check_subject_exists", "check_units_resolution_is_set"}


@pytest.mark.parametrize("use_pynwb", [True, False])
def test_spikeinterface_reads_the_same_spike_trains(tmp_path, use_pynwb):
    from spikeinterface.extractors import read_nwb_sorting

    sd = fixture("small")
    path = export(sd, tmp_path / "small.nwb")
    sorting = read_nwb_sorting(str(path), use_pynwb=use_pynwb)
    assert sorting.sampling_frequency == pytest.approx(20000.0, rel=1e-12)
    assert [str(u) for u in sorting.get_unit_ids()] == [str(i) for i in range(sd.N)]
    assert list(sorting.get_property("electrode")) == list(sd.electrodes)
    for unit_id, train in zip(sorting.get_unit_ids(), sd.train, strict=True):
        expected = np.round(train / 1000.0 * 20000.0).astype(np.int64)
        np.testing.assert_array_equal(sorting.get_unit_spike_train(unit_id), expected)

    neg = fixture("neg_start")  # no resolution: SpikeInterface needs the rate; times are shifted
    path = export(neg, tmp_path / "neg.nwb")
    sorting = read_nwb_sorting(str(path), use_pynwb=use_pynwb, sampling_frequency=20000.0)
    for unit_id, train in zip(sorting.get_unit_ids(), neg.train, strict=True):
        expected = np.round((train + 200.0) / 1000.0 * 20000.0).astype(np.int64)
        np.testing.assert_array_equal(sorting.get_unit_spike_train(unit_id), expected)


def test_reads_a_units_table_written_by_plain_pynwb(tmp_path):
    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.misc import Units

    nwb = NWBFile(
        session_description="written by pynwb alone",
        identifier="foreign-1",
        session_start_time=datetime(2022, 2, 2, tzinfo=UTC),
    )
    nwb.units = Units(name="units", resolution=1 / 30000.0)
    nwb.units.add_column("quality", "curation label")
    nwb.units.add_unit(spike_times=[0.5, 1.25], obs_intervals=[[0.0, 3.0]], quality="good")
    nwb.units.add_unit(spike_times=[2.0], obs_intervals=[[0.0, 3.0]], quality="mua")
    path = tmp_path / "foreign.nwb"
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    a = load_spikedata_from_nwb(path, prefer_pynwb=True)
    b = load_spikedata_from_nwb(path, prefer_pynwb=False)
    for sd in (a, b):
        assert (sd.N, sd.start_time, sd.length) == (2, 0.0, 3000.0)
        np.testing.assert_array_equal(sd.train[0], [500.0, 1250.0])
        np.testing.assert_array_equal(sd.train[1], [2000.0])
        assert sd.neuron_attributes == [{"quality": "good"}, {"quality": "mua"}]
        assert sd.metadata["fs_Hz"] == pytest.approx(30000.0)
        assert sd.metadata["identifier"] == "foreign-1"
    assert a.metadata == b.metadata


# ------------------------------------------------------------------------ plain HDF5 layout
@pytest.mark.parametrize("names", [{"group": "spikes"}, {"spike_times_dataset": "times"}])
def test_non_default_names_warn_and_write_the_plain_hdf5_layout(tmp_path, names):
    sd = fixture("neg_start")
    path = tmp_path / "plain.h5"
    with pytest.warns(UserWarning, match="not schema-valid NWB"):
        export_spikedata_to_nwb(sd, path, **names)
    group = names.get("group", "units")
    ds = names.get("spike_times_dataset", "spike_times")
    with h5py.File(path, "r") as f:
        assert "nwb_version" not in f.attrs
        g = f[group]
        assert g[ds].dtype == np.float64
        assert g["spike_times_index"].dtype == np.int64
        np.testing.assert_array_equal(
            g["spike_times_index"][()], np.cumsum([t.size for t in sd.train])
        )
        np.testing.assert_allclose(g[ds][()], np.concatenate(sd.train) / 1000.0, rtol=1e-15)
        assert (g.attrs["start_time"], g.attrs["length_ms"]) == (-200.0, 500.0)
    for prefer_pynwb in (True, False):
        assert_same_spikedata(sd, load_spikedata_from_nwb(path, prefer_pynwb=prefer_pynwb, **names))


def test_plain_layout_export_and_module_import_never_import_pynwb(tmp_path):
    code = (
        "import sys, warnings\n"
        "import spikelab.data_loaders.data_exporters, spikelab.data_loaders.data_loaders\n"
        "assert 'pynwb' not in sys.modules and 'hdmf' not in sys.modules\n"
        "from spikelab.spikedata import SpikeData\n"
        "from spikelab.formats.nwb import export_spikedata_to_nwb as e\n"
        "from spikelab.formats.nwb import load_spikedata_from_nwb as r\n"
        "warnings.simplefilter('ignore')\n"
        f"p = {str(tmp_path / 'plain.h5')!r}\n"
        "e(SpikeData([[1.0, 2.0]], length=3.0), p, group='spikes')\n"
        "assert r(p, group='spikes').N == 1\n"
        "assert 'pynwb' not in sys.modules and 'hdmf' not in sys.modules, 'pynwb imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# -------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "kwargs",
    [
        {"spike_times_dataset": ""},
        {"spike_times_dataset": "a/b"},
        {"spike_times_index_dataset": "spike_times"},
        {"group": ""},
        {"group": 3},
        {"fs_Hz": 0},
        {"fs_Hz": "fast"},
        {"identifier": ""},
        {"session_start_time": "yesterday"},
        {"session_start_time": datetime(2024, 1, 1)},  # no time zone
        {"age": "90 days"},
        {"sex": 1},
        {"experimenter": ["ok", 3]},
        {"compression": "zstd"},
    ],
)
def test_argument_errors_raise_before_any_file_exists(tmp_path, kwargs):
    with pytest.raises(ExportError):
        export_spikedata_to_nwb(fixture("small"), tmp_path / "out" / "rec.nwb", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_invalid_spike_data_raises_before_any_file_exists(tmp_path):
    target = tmp_path / "rec.nwb"
    with pytest.raises(ExportError, match="SpikeData"):
        export_spikedata_to_nwb({"train": []}, target)
    nan = SpikeData([[1.0, 2.0]], length=5.0)
    nan.train[0] = np.array([1.0, np.nan])
    with pytest.raises(ExportError, match="not finite"):
        export_spikedata_to_nwb(nan, target)
    outside = SpikeData([[1.0, 2.0]], length=5.0)
    outside.train[0] = np.array([1.0, 6.0])
    with pytest.raises(ExportError, match="outside the recording"):
        export_spikedata_to_nwb(outside, target)
    bad_meta = SpikeData([[1.0]], length=5.0, metadata={"fs_Hz": -3})
    with pytest.raises(ExportError, match="fs_Hz"):
        export_spikedata_to_nwb(bad_meta, target)
    assert list(tmp_path.iterdir()) == []


# After a failed write HDF5 1.14 (h5py 3.16) cannot close the datasets pynwb left open and may
# crash at interpreter exit; the child therefore leaves with os._exit once the exporter has
# raised, and the test checks what the exporter guarantees: the error, the files on disk.
_FAILING_WRITE = """
import os, resource, signal, sys, warnings
import numpy as np
import h5py, pynwb  # imported before the size limit
from spikelab.spikedata import SpikeData
from spikelab.formats.nwb import export_spikedata_to_nwb

warnings.simplefilter("ignore")
target, group = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(0)
trains = [np.sort(rng.uniform(0, 1e6, 100_000)) for _ in range(4)]
sd = SpikeData(trains, length=1e6, metadata={"fs_Hz": 30000.0})
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, resource.RLIM_INFINITY))
try:
    export_spikedata_to_nwb(sd, target, group=group)
except Exception as exc:
    print("failed:", type(exc).__name__, flush=True)
    os._exit(3)
print("no error", flush=True)
os._exit(0)
"""


@pytest.mark.parametrize("group", ["units", "spikes"])
def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path, group):
    target = tmp_path / "rec.nwb"
    target.write_bytes(b"previous export")
    # A real failure mid-write: the file size limit (3.2 MB of spikes, 256 KiB allowed).
    done = subprocess.run(
        [sys.executable, "-c", _FAILING_WRITE, str(target), group],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 3, done.stdout + done.stderr
    assert done.stdout.strip() == "failed: OSError"
    assert target.read_bytes() == b"previous export"
    assert [p.name for p in tmp_path.iterdir()] == ["rec.nwb"]


def test_loader_errors_name_the_file_and_the_problem(tmp_path):
    missing = tmp_path / "missing.nwb"
    with pytest.raises(LoadError, match="missing.nwb: no such file"):
        load_spikedata_from_nwb(missing)
    with pytest.raises(LoadError, match="directory"):
        load_spikedata_from_nwb(tmp_path)
    text = tmp_path / "notes.nwb"
    text.write_text("not hdf5")
    with pytest.raises(LoadError, match="notes.nwb: not an NWB/HDF5 file"):
        load_spikedata_from_nwb(text)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["something"] = np.arange(3)
    with pytest.raises(LoadError, match="other.h5: no group 'units'"):
        load_spikedata_from_nwb(other)

    from pynwb import NWBHDF5IO, NWBFile

    no_units = tmp_path / "no_units.nwb"
    with NWBHDF5IO(str(no_units), "w") as io:
        io.write(NWBFile("no units", "id-1", datetime(2022, 1, 1, tzinfo=UTC)))
    for prefer_pynwb in (True, False):
        with pytest.raises(LoadError, match="no_units.nwb: no Units table"):
            load_spikedata_from_nwb(no_units, prefer_pynwb=prefer_pynwb)

    good = export(fixture("small"), tmp_path / "good.nwb")
    with pytest.raises(LoadError, match="length_ms"):
        load_spikedata_from_nwb(good, length_ms=-1)
    with pytest.raises(LoadError, match="outside the recording"):
        load_spikedata_from_nwb(good, length_ms=10.0)
    with pytest.raises(LoadError, match="prefer_pynwb"):
        load_spikedata_from_nwb(good, prefer_pynwb="yes")
    with pytest.raises(LoadError, match="group 'spikes'"):
        load_spikedata_from_nwb(good, group="spikes")


def test_length_ms_overrides_the_stored_length(tmp_path):
    path = export(fixture("small"), tmp_path / "small.nwb")
    for prefer_pynwb in (True, False):
        sd = load_spikedata_from_nwb(path, prefer_pynwb=prefer_pynwb, length_ms=12000.0)
        assert sd.length == 12000.0


def test_start_time_ms_overrides_the_stored_start_as_in_spikelab(tmp_path):
    """SpikeLab 0.1.2's keyword: the start (ms) replaces the file's; spike times stay."""
    sd = fixture("small")
    path = export(sd, tmp_path / "small.nwb")
    for prefer_pynwb in (True, False):
        got = load_spikedata_from_nwb(
            path, prefer_pynwb=prefer_pynwb, start_time_ms=-5.0, length_ms=10005.0
        )
        assert (got.start_time, got.length) == (-5.0, 10005.0)
        for a, b in zip(got.train, sd.train, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-15, atol=0)
    with pytest.raises(LoadError, match="outside the recording"):
        load_spikedata_from_nwb(path, start_time_ms=5000.0)
    for bad in ("soon", float("nan")):
        with pytest.raises(LoadError, match="start_time_ms"):
            load_spikedata_from_nwb(path, start_time_ms=bad)


def test_raw_data_is_not_written_and_says_so(tmp_path):
    sd = SpikeData(
        [[1.0]],
        length=2.0,
        raw_data=np.zeros((2, 4)),
        raw_time=np.arange(4.0),
        metadata={"fs_Hz": 1e3},
    )
    with pytest.warns(UserWarning, match="raw_data"):
        export_spikedata_to_nwb(sd, tmp_path / "raw.nwb")
