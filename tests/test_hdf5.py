"""HDF5 export/import: every style x every unit x edge case, plus properties and failures."""

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from spikedata_factories import FIXTURES, SYNTHETIC, assert_same_trains, fixture, synthetic

from spikelab.data_loaders.data_exporters import ExportError, export_spikedata_to_hdf5
from spikelab.data_loaders.data_loaders import LoadError, load_spikedata_from_hdf5
from spikelab.spikedata import SpikeData

FS = 20000.0
UNIT_KW = {"ragged": "spike_times_unit", "group": "group_time_unit", "paired": "times_unit"}


def _tolerance(unit):
    """Tolerance (atol ms, rtol) of a round trip through ``unit``."""
    return {"ms": (0.0, 0.0), "s": (1e-12, 4e-16), "samples": (0.5 * 1000 / FS + 1e-9, 0.0)}[unit]


def _case(name):
    return fixture(name[4:]) if name.startswith("fix:") else synthetic(name)


CASES = [f"fix:{n}" for n in FIXTURES] + list(SYNTHETIC)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("style", ["ragged", "group", "paired"])
@pytest.mark.parametrize("unit", ["ms", "s", "samples"])
def test_round_trip_every_style_unit_and_case(tmp_path, case, style, unit):
    sd = _case(case)
    path = tmp_path / "out.h5"
    export_spikedata_to_hdf5(sd, path, style=style, fs_Hz=FS, **{UNIT_KW[style]: unit})
    back = load_spikedata_from_hdf5(path)
    atol, rtol = _tolerance(unit)
    assert_same_trains(sd, back, atol_ms=atol, rtol=rtol)
    assert back.metadata == sd.metadata
    assert back.neuron_attributes == sd.neuron_attributes


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("bin_ms", [1.0, 7.5])
def test_raster_round_trip_keeps_counts_per_bin(tmp_path, case, bin_ms):
    sd = _case(case)
    path = tmp_path / "raster.h5"
    export_spikedata_to_hdf5(sd, path, style="raster", raster_bin_size_ms=bin_ms)
    with h5py.File(path) as f:
        np.testing.assert_array_equal(f["raster"][()], sd.raster(bin_ms))
        assert f["raster"].attrs["bin_size_ms"] == bin_ms
        assert f["raster"].attrs["start_time"] == sd.start_time
    back = load_spikedata_from_hdf5(path)
    assert back.N == sd.N and back.start_time == sd.start_time and back.length == sd.length
    np.testing.assert_array_equal(back.raster(bin_ms), sd.raster(bin_ms))
    for a, b in zip(sd.train, back.train, strict=True):
        assert np.all(np.abs(a - b) <= bin_ms)


@pytest.mark.parametrize("n_units", [0, 2])
def test_raster_of_a_recording_of_length_zero_without_spikes_has_no_bins(tmp_path, n_units):
    sd = SpikeData([[] for _ in range(n_units)], length=0.0, start_time=-3.0)
    path = tmp_path / "raster.h5"
    export_spikedata_to_hdf5(sd, path, style="raster", raster_bin_size_ms=1.0)
    with h5py.File(path) as f:
        assert f["raster"].shape == (n_units, 0)  # as SpikeLab 0.1.2 writes it
        assert f["raster"].chunks is None and f["raster"].compression is None
    assert_same_trains(sd, load_spikedata_from_hdf5(path))


def test_raster_of_length_zero_keeps_a_spike_at_its_start(tmp_path):
    sd = SpikeData([[2.0], []], length=0.0, start_time=2.0)
    path = tmp_path / "raster.h5"
    export_spikedata_to_hdf5(sd, path, style="raster", raster_bin_size_ms=1.0)
    with h5py.File(path) as f:
        np.testing.assert_array_equal(f["raster"][()], [[1], [0]])
    assert_same_trains(sd, load_spikedata_from_hdf5(path))


ZERO_OR_EMPTY = {
    "zero units": lambda: SpikeData([], length=7.0, start_time=3.0),
    "zero units, length 0": lambda: SpikeData([], length=0.0, start_time=-4.0),
    "all units empty": lambda: SpikeData([[], [], []], length=25.0, start_time=-5.0),
    "all units empty, length 0": lambda: SpikeData([[], []], length=0.0),
}


@pytest.mark.parametrize("case", list(ZERO_OR_EMPTY))
@pytest.mark.parametrize(
    "options",
    [
        {"style": "ragged", "spike_times_unit": "samples", "fs_Hz": FS},
        {"style": "ragged", "spike_times_unit": "ms"},
        {"style": "group"},
        {"style": "paired", "times_unit": "s"},
        {"style": "raster", "raster_bin_size_ms": 2.0},
    ],
    ids=lambda o: "-".join(str(v) for v in o.values()),
)
def test_zero_units_and_all_empty_units_keep_n_start_and_length(tmp_path, case, options):
    sd = ZERO_OR_EMPTY[case]()
    export_spikedata_to_hdf5(sd, tmp_path / "out.h5", **options)
    assert_same_trains(sd, load_spikedata_from_hdf5(tmp_path / "out.h5"))


def test_raster_uses_the_narrowest_count_dtype_and_is_chunked_and_compressed(tmp_path):
    rng = np.random.default_rng(1)
    sd = SpikeData([np.sort(rng.uniform(0, 60_000, 3000)) for _ in range(40)], length=60_000.0)
    path = tmp_path / "r.h5"
    export_spikedata_to_hdf5(sd, path, style="raster", raster_bin_size_ms=1.0)
    with h5py.File(path) as f:
        dset = f["raster"]
        assert dset.dtype == np.uint8
        assert dset.chunks is not None and dset.compression == "gzip"
    dense_bytes = 40 * 60_000 * 8  # what an int64 matrix would take
    assert path.stat().st_size < dense_bytes / 10
    many = SpikeData([np.full(300, 5.0)], length=10.0)
    export_spikedata_to_hdf5(many, path, style="raster", raster_bin_size_ms=1.0)
    with h5py.File(path) as f:
        assert f["raster"].dtype == np.uint16 and f["raster"][0, 5] == 300


def test_raster_options_change_dtype_and_compression(tmp_path):
    sd = synthetic("many_units")
    path = tmp_path / "r.h5"
    export_spikedata_to_hdf5(
        sd,
        path,
        style="raster",
        raster_bin_size_ms=2.0,
        raster_dtype="int32",
        raster_compression=None,
    )
    with h5py.File(path) as f:
        assert f["raster"].dtype == np.int32 and f["raster"].compression is None


def test_ragged_layout_is_the_nwb_vector_index_convention(tmp_path):
    sd = synthetic("empty_units")
    path = tmp_path / "r.h5"
    export_spikedata_to_hdf5(sd, path)
    with h5py.File(path) as f:
        np.testing.assert_array_equal(f["spike_times_index"][()], [0, 2, 2, 3])
        np.testing.assert_array_equal(f["spike_times"][()], [0.001, 0.0025, 0.00325])
        assert f["spike_times"].attrs["unit"] == "s"
        assert f.attrs["start_time"] == 0.0 and f.attrs["length_ms"] == 10.0


def test_group_names_sort_numerically_beyond_nine_units(tmp_path):
    sd = SpikeData([[float(i)] for i in range(12)], length=20.0)
    path = tmp_path / "g.h5"
    export_spikedata_to_hdf5(sd, path, style="group")
    with h5py.File(path) as f:
        assert sorted(f["units"].keys()) != [str(i) for i in range(12)]  # lexicographic differs
    back = load_spikedata_from_hdf5(path)
    assert [t[0] for t in back.train] == [float(i) for i in range(12)]


def test_paired_defaults_agree_between_exporter_and_loader(tmp_path):
    sd = SpikeData([[1.5, 2.5], [3.5]], length=4.0)
    path = tmp_path / "p.h5"
    export_spikedata_to_hdf5(sd, path, style="paired")
    with h5py.File(path) as f:
        assert f["times"].attrs["unit"] == "ms"
        np.testing.assert_array_equal(f["idces"][()], [0, 0, 1])
    back = load_spikedata_from_hdf5(path, idces_dataset="idces", times_dataset="times")
    assert_same_trains(sd, back)


def test_loader_refuses_a_unit_that_contradicts_the_file(tmp_path):
    path = tmp_path / "p.h5"
    export_spikedata_to_hdf5(SpikeData([[1.0]]), path, style="paired")
    with pytest.raises(LoadError, match="stores times in 'ms' but 's' was asked for"):
        load_spikedata_from_hdf5(path, idces_dataset="idces", times_dataset="times", times_unit="s")


def test_paired_loader_accepts_time_sorted_pairs_written_by_other_tools(tmp_path):
    path = tmp_path / "p.h5"
    with h5py.File(path, "w") as f:
        f["idces"] = np.array([1, 0, 1, 0])
        f["times"] = np.array([1.0, 2.0, 3.0, 4.0])
    back = load_spikedata_from_hdf5(path, idces_dataset="idces", times_dataset="times")
    assert [t.tolist() for t in back.train] == [[2.0, 4.0], [1.0, 3.0]]
    assert back.length == 4.0


def test_non_default_dataset_names_round_trip(tmp_path):
    sd = synthetic("many_units")
    path = tmp_path / "n.h5"
    names = dict(spike_times_dataset="acq/st", spike_times_index_dataset="acq/sti")
    export_spikedata_to_hdf5(sd, path, **names)
    assert_same_trains(sd, load_spikedata_from_hdf5(path, **names), atol_ms=1e-12, rtol=4e-16)
    export_spikedata_to_hdf5(sd, path, style="group", group_per_unit="cells", group_time_unit="ms")
    assert_same_trains(sd, load_spikedata_from_hdf5(path, group_per_unit="cells"))
    export_spikedata_to_hdf5(
        sd, path, style="paired", idces_dataset="who", times_dataset="when", times_unit="s"
    )
    back = load_spikedata_from_hdf5(path, idces_dataset="who", times_dataset="when")
    assert_same_trains(sd, back, atol_ms=1e-12, rtol=4e-16)


@pytest.mark.parametrize("raw_time_unit", ["ms", "s", "samples"])
def test_raw_traces_round_trip(tmp_path, raw_time_unit):
    sd = synthetic("raw")
    path = tmp_path / "raw.h5"
    export_spikedata_to_hdf5(
        sd,
        path,
        raw_dataset="raw",
        raw_time_dataset="raw_time",
        raw_time_unit=raw_time_unit,
        fs_Hz=1000.0,
    )
    back = load_spikedata_from_hdf5(path)
    np.testing.assert_array_equal(back.raw_data, sd.raw_data)
    assert back.raw_data.dtype == np.float32
    np.testing.assert_allclose(back.raw_time, sd.raw_time, rtol=1e-15)


def test_raw_dataset_on_a_recording_without_raw_data_warns_and_skips(tmp_path):
    path = tmp_path / "noraw.h5"
    with pytest.warns(UserWarning, match="no raw_data"):
        export_spikedata_to_hdf5(SpikeData([[1.0]]), path, raw_dataset="raw")
    with h5py.File(path) as f:
        assert "raw" not in f


def test_raw_data_of_no_channels_is_skipped_like_no_raw_data(tmp_path):
    sd = SpikeData([[5.0]], length=20.0, raw_data=np.zeros((0, 10)), raw_time=np.arange(10.0))
    path = tmp_path / "noraw.h5"
    with pytest.warns(UserWarning, match="no raw_data"):
        export_spikedata_to_hdf5(sd, path, raw_dataset="raw", raw_time_dataset="raw_time")
    with h5py.File(path) as f:
        assert "raw" not in f and "raw_time" not in f


@pytest.mark.parametrize("raw_time", [None, np.arange(2.0)])
def test_raw_data_whose_raw_time_was_unset_raises_before_any_file_exists(tmp_path, raw_time):
    sd = SpikeData([[10.0, 20.0]], length=100.0)
    sd.raw_data = np.array([[1.0, 2.0, 3.0]])  # set by hand, as SpikeLab's tests do
    sd.raw_time = raw_time
    path = tmp_path / "sub" / "raw.h5"
    message = "raw_time is None" if raw_time is None else "raw_time has 2 times"
    with pytest.raises(ExportError, match=message):
        export_spikedata_to_hdf5(sd, path, raw_dataset="raw", raw_time_dataset="t")
    assert not (tmp_path / "sub").exists()


def test_length_and_metadata_overrides_on_load(tmp_path):
    path = tmp_path / "x.h5"
    export_spikedata_to_hdf5(SpikeData([[1.0]], length=2.0, metadata={"a": 1, "b": 2}), path)
    back = load_spikedata_from_hdf5(path, metadata={"b": 3, "c": 4})
    assert back.metadata == {"a": 1, "b": 3, "c": 4}


def test_length_override_on_load(tmp_path):
    path = tmp_path / "x.h5"
    export_spikedata_to_hdf5(SpikeData([[1.0]], length=2.0), path)
    assert load_spikedata_from_hdf5(path, length_ms=50.0).length == 50.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(style="nope"), "unknown HDF5 style"),
        (dict(style="nope"), "^Unknown style 'nope'"),  # SpikeLab 0.1.2's words
        (dict(style=""), "^Unknown style ''"),
        (dict(style="raster"), "raster_bin_size_ms"),
        (dict(style="raster", raster_bin_size_ms=0), "raster_bin_size_ms"),
        (dict(style="raster", raster_bin_size_ms=-1.0), "raster_bin_size_ms"),
        (dict(style="raster", raster_bin_size_ms=float("nan")), "raster_bin_size_ms"),
        (dict(style="raster", raster_bin_size_ms=1, raster_dtype="float32"), "integer dtype"),
        (dict(spike_times_unit="samples"), "needs fs_Hz"),
        (dict(spike_times_unit="samples", fs_Hz=0), "fs_Hz"),
        (dict(spike_times_unit="samples", fs_Hz=-5.0), "fs_Hz"),
        (dict(spike_times_unit="samples", fs_Hz=float("nan")), "fs_Hz"),
        (dict(spike_times_unit="minutes"), "spike_times_unit must be one of"),
        (dict(style="group", group_time_unit="us"), "group_time_unit"),
        (dict(style="paired", times_unit="samples"), "needs fs_Hz"),
        (dict(spike_times_dataset="a", spike_times_index_dataset="a"), "must differ"),
        (dict(raw_time_dataset="t"), "needs raw_dataset"),
    ],
)
def test_argument_errors_raise_before_any_file_exists(tmp_path, kwargs, message):
    path = tmp_path / "sub" / "out.h5"
    with pytest.raises(ExportError, match=message):
        export_spikedata_to_hdf5(synthetic("one_spike"), path, **kwargs)
    assert not path.exists() and not (tmp_path / "sub").exists()


def test_failed_export_keeps_the_previous_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "out.h5"
    export_spikedata_to_hdf5(SpikeData([[1.0]]), path)
    before = path.read_bytes()
    import spikelab.formats.hdf5.write as hdf5

    def boom(*a, **k):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(hdf5, "_write_flat_times", boom)
    with pytest.raises(OSError, match="disk full"):
        export_spikedata_to_hdf5(SpikeData([[2.0]]), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.h5"]


def test_a_directory_in_the_way_is_a_clear_error(tmp_path):
    (tmp_path / "out.h5").mkdir()
    with pytest.raises(ExportError, match="directory is in the way"):
        export_spikedata_to_hdf5(SpikeData([[1.0]]), tmp_path / "out.h5")


def test_loading_something_that_is_not_hdf5_names_the_file(tmp_path):
    path = tmp_path / "fake.h5"
    path.write_bytes(b"not hdf5 at all")
    with pytest.raises(LoadError, match="fake.h5"):
        load_spikedata_from_hdf5(path)


# ------------------------------------------------------------------ properties
finite_ms = st.floats(min_value=-1e7, max_value=1e7, allow_nan=False).filter(
    lambda x: x == 0 or abs(x) > 1e-290  # keep clear of subnormals after / 1000
)


_FAST = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@st.composite
def spikedatas(draw):
    start = draw(finite_ms)
    n = draw(st.integers(0, 6))
    length = draw(st.floats(min_value=0.0, max_value=1e7, allow_nan=False))
    hi = start + length
    train = [
        sorted(draw(st.lists(finite_ms.filter(lambda x: start <= x <= hi), max_size=20)))
        for _ in range(n)
    ]
    return SpikeData(train, start_time=start, length=length)


@_FAST
@given(sd=spikedatas(), style=st.sampled_from(["ragged", "group", "paired"]))
def test_property_ms_round_trip_is_bit_exact(tmp_path, sd, style):
    path = tmp_path / "p.h5"
    export_spikedata_to_hdf5(sd, path, style=style, **{UNIT_KW[style]: "ms"})
    assert_same_trains(sd, load_spikedata_from_hdf5(path))


@_FAST
@given(sd=spikedatas())
def test_property_seconds_are_exact_quotients_and_come_back_within_one_ulp(tmp_path, sd):
    # ms -> s -> ms cannot be bit-exact for every double (x / 1000 * 1000 != x for ~2 % of
    # values, and in some binades two ms values share one s value); what is exact is the
    # stored value (x / 1000) and the way back is within one ulp of the original.
    path = tmp_path / "p.h5"
    export_spikedata_to_hdf5(sd, path, spike_times_unit="s")
    with h5py.File(path) as f:
        flat = np.concatenate(sd.train) if sd.N else np.zeros(0)
        np.testing.assert_array_equal(f["spike_times"][()], flat / 1000.0)
    back = load_spikedata_from_hdf5(path)
    for a, b in zip(sd.train, back.train, strict=True):
        assert np.all(np.abs(a - b) <= np.spacing(np.abs(a)))


@_FAST
@given(sd=spikedatas(), fs=st.sampled_from([1000.0, 20000.0, 30000.0, 44100.0]))
def test_property_samples_come_back_within_half_a_sample(tmp_path, sd, fs):
    path = tmp_path / "p.h5"
    export_spikedata_to_hdf5(sd, path, spike_times_unit="samples", fs_Hz=fs)
    back = load_spikedata_from_hdf5(path)
    half = 0.5 * 1000.0 / fs
    for a, b in zip(sd.train, back.train, strict=True):
        assert np.all(np.abs(a - b) <= half * (1 + 1e-9) + np.spacing(np.abs(a)) * 4)


def test_outputs_get_the_usual_file_mode_not_the_temporary_one(tmp_path):
    import os

    path = tmp_path / "mode.h5"
    export_spikedata_to_hdf5(SpikeData([[1.0]]), path)
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


# ---------------------------------------------------------------- blocks of the flat styles
# Sizes with block = 7 spikes: empty units exactly at block edges (after 7 and 14 spikes), a
# unit longer than a block (15 spikes across 14..29), units straddling edges (21, 28, 35).
BLOCK_SIZES = [0, 3, 4, 0, 7, 0, 15, 2, 0, 5, 0]


def _blocky_recording():
    rng = np.random.default_rng(11)
    train = [np.sort(rng.uniform(0.0, 1000.0, n)) for n in BLOCK_SIZES]
    return SpikeData(train, length=1000.0, metadata={"fs_Hz": FS})


@pytest.mark.parametrize("style", ["ragged", "paired", "group"])
@pytest.mark.parametrize("unit", ["ms", "s", "samples"])
def test_tiny_blocks_write_the_same_file_and_exact_values(tmp_path, monkeypatch, style, unit):
    import spikelab.formats.streaming as streaming
    from spikelab.formats.time_units import ms_to_unit

    sd = _blocky_recording()
    kwargs = {"style": style, "fs_Hz": FS, UNIT_KW[style]: unit}
    export_spikedata_to_hdf5(sd, tmp_path / "whole.h5", **kwargs)
    monkeypatch.setattr(streaming, "BLOCK_SPIKES", 7)
    export_spikedata_to_hdf5(sd, tmp_path / "blocks.h5", **kwargs)
    assert (tmp_path / "blocks.h5").read_bytes() == (tmp_path / "whole.h5").read_bytes()
    expected = [ms_to_unit(t, unit, FS) for t in sd.train]
    with h5py.File(tmp_path / "blocks.h5", "r") as f:
        if style == "group":
            written = [f["units"][str(i)][()] for i in range(sd.N)]
        else:
            flat = f["spike_times" if style == "ragged" else "times"][()]
            written = np.split(flat, np.cumsum(BLOCK_SIZES)[:-1])
        if style == "paired":
            np.testing.assert_array_equal(f["idces"][()], np.repeat(np.arange(sd.N), BLOCK_SIZES))
    for got, want in zip(written, expected, strict=True):
        assert got.dtype == want.dtype and got.tobytes() == want.tobytes()
    if unit == "ms":
        assert_same_trains(sd, load_spikedata_from_hdf5(tmp_path / "blocks.h5"))


@pytest.mark.parametrize("block", [1, 2, 7, 1000])
@pytest.mark.parametrize("unit", ["ms", "s", "samples"])
def test_converted_blocks_match_ms_to_unit_bit_for_bit(block, unit):
    from spikelab.formats.streaming import converted_blocks
    from spikelab.formats.time_units import ms_to_unit

    rng = np.random.default_rng(block)
    train = [rng.uniform(-50.0, 5e6, n) for n in (0, 1, 2500, 0, 9, 0)]
    expected = ms_to_unit(np.concatenate(train), unit, FS)
    got = np.concatenate([v.copy() for _, v in converted_blocks(train, unit, FS, block)])
    assert got.dtype == expected.dtype and got.tobytes() == expected.tobytes()
    starts = [s for s, _ in converted_blocks(train, unit, FS, block)]
    assert starts == list(range(0, expected.size, block))
