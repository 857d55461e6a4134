"""KiloSort/Phy folders: round trips, SpikeInterface and phylib reading them, argument errors."""

import ast
import csv
import json
import math
import shutil
import warnings

import numpy as np
import pytest
from spikedata_factories import FIXTURES, SYNTHETIC, assert_same_trains, fixture, synthetic

from spikelab.data_loaders.data_exporters import ExportError, export_spikedata_to_kilosort
from spikelab.data_loaders.data_loaders import LoadError, load_spikedata_from_kilosort
from spikelab.formats import time_order
from spikelab.formats.kilosort import write as kilosort_write
from spikelab.spikedata import SpikeData

FS = 20000.0


def _export(sd, folder, **kwargs):
    """Export, silencing the expected start_time warning."""
    kwargs.setdefault("fs_Hz", FS)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "start_time is", UserWarning)
        return export_spikedata_to_kilosort(sd, folder, **kwargs)


def _samples(sd, fs=FS):
    """Expected per-unit int64 samples, shifted like the exporter for a negative start."""
    offset = -int(np.rint(sd.start_time * fs / 1000)) if sd.start_time < 0 else 0
    return [np.rint(t * fs / 1000).astype(np.int64) + offset for t in sd.train]


def _attrs_without_cluster_id(sd):
    return [{k: v for k, v in a.items() if k != "cluster_id"} for a in sd.neuron_attributes]


def _half_sample(fs=FS):
    return 0.5 * 1000.0 / fs + 1e-9


# ------------------------------------------------------------------------ our round trip
@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_roundtrip_in_samples_is_within_half_a_sample_and_keeps_everything(tmp_path, name):
    sd = fixture(name)
    times_path, clusters_path = _export(sd, tmp_path / "ks")
    assert times_path == str(tmp_path / "ks" / "spike_times.npy")
    assert clusters_path == str(tmp_path / "ks" / "spike_clusters.npy")
    back = load_spikedata_from_kilosort(tmp_path / "ks")
    assert_same_trains(sd, back, atol_ms=_half_sample())
    assert back.metadata == sd.metadata
    expected = sd.neuron_attributes or [{} for _ in range(sd.N)]
    assert _attrs_without_cluster_id(back) == expected
    assert [a["cluster_id"] for a in back.neuron_attributes] == list(range(sd.N))


@pytest.mark.parametrize("name", SYNTHETIC)
@pytest.mark.parametrize("time_unit", ["ms", "s", "samples"])
def test_synthetic_roundtrip_ms_exact_s_to_rounding_samples_to_half_a_sample(
    tmp_path, name, time_unit
):
    sd = synthetic(name)
    _export(sd, tmp_path / "ks", time_unit=time_unit)
    back = load_spikedata_from_kilosort(tmp_path / "ks", time_unit=time_unit)
    tol = {"ms": {}, "s": {"rtol": 1e-15, "atol_ms": 1e-12}, "samples": {}}[time_unit]
    if time_unit == "samples":
        tol = {"atol_ms": _half_sample()}
    assert_same_trains(sd, back, **tol)
    assert back.metadata == sd.metadata
    times = np.load(tmp_path / "ks" / "spike_times.npy")
    assert times.dtype == (np.int64 if time_unit == "samples" else np.float64)
    if time_unit == "samples":  # Phy's order; ms and s are SpikeLab's, unit by unit
        assert np.all(np.diff(times) >= 0)
    else:
        clusters = np.load(tmp_path / "ks" / "spike_templates.npy")
        assert np.all(np.diff(clusters) >= 0)
        for unit in range(sd.N):
            assert np.all(np.diff(times[clusters == unit]) >= 0)


@pytest.mark.parametrize("time_unit", ["ms", "samples"])
def test_negative_start_time_warns_and_is_restored_exactly(tmp_path, time_unit):
    sd = synthetic("neg_start")
    with pytest.warns(UserWarning, match="start_time is -200.0 ms"):
        export_spikedata_to_kilosort(sd, tmp_path / "ks", fs_Hz=FS, time_unit=time_unit)
    times = np.load(tmp_path / "ks" / "spike_times.npy")
    side = json.loads((tmp_path / "ks" / "spikelab.json").read_text())
    assert side["start_time_ms"] == -200.0 and side["length_ms"] == 500.0
    if time_unit == "samples":
        assert times.min() == 0 and side["sample_offset"] == 4000  # -200 ms at 20 kHz
    else:
        assert times.min() == -200.0 and side["sample_offset"] == 0
    back = load_spikedata_from_kilosort(tmp_path / "ks", time_unit=time_unit)
    assert (back.start_time, back.length) == (-200.0, 500.0)
    assert_same_trains(sd, back, atol_ms=0.0 if time_unit == "ms" else _half_sample())


def test_positive_start_time_warns_and_keeps_samples_counted_from_zero_ms(tmp_path):
    sd = SpikeData([[105.0, 150.0]], start_time=100.0, length=100.0)
    with pytest.warns(UserWarning, match="start_time is 100.0 ms"):
        export_spikedata_to_kilosort(sd, tmp_path / "ks", fs_Hz=1000.0)
    np.testing.assert_array_equal(np.load(tmp_path / "ks" / "spike_times.npy"), [105, 150])
    back = load_spikedata_from_kilosort(tmp_path / "ks")
    assert_same_trains(sd, back)


def test_spike_rounded_past_the_end_is_clipped_back_inside_the_recording(tmp_path):
    sd = SpikeData([[0.0, 10.0]], length=10.0)
    _export(sd, tmp_path / "down", fs_Hz=130.0)  # 10 ms = 1.3 samples -> 1 (7.69 ms)
    assert_same_trains(sd, load_spikedata_from_kilosort(tmp_path / "down"), atol_ms=3.85)
    _export(sd, tmp_path / "up", fs_Hz=170.0)  # 10 ms = 1.7 samples -> 2 (11.76 ms)
    back = load_spikedata_from_kilosort(tmp_path / "up")
    assert back.train[0][-1] == 10.0 and back.length == 10.0


def test_folder_holds_every_file_phy_needs_with_the_right_shapes_and_types(tmp_path):
    sd = fixture("small")
    _export(sd, tmp_path / "ks")
    folder = tmp_path / "ks"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [
            "amplitudes.npy",
            "channel_map.npy",
            "channel_positions.npy",
            "cluster_group.tsv",
            "cluster_info.tsv",
            "params.py",
            "spike_clusters.npy",
            "spike_templates.npy",
            "spike_times.npy",
            "spikelab.json",
        ]
    )
    times = np.load(folder / "spike_times.npy")
    clusters = np.load(folder / "spike_clusters.npy")
    templates = np.load(folder / "spike_templates.npy")
    amplitudes = np.load(folder / "amplitudes.npy")
    assert times.dtype == np.int64 and clusters.dtype == np.int32
    assert templates.dtype == np.int32 and amplitudes.dtype == np.float64
    assert times.shape == clusters.shape == templates.shape == amplitudes.shape == (1396,)
    assert np.all(np.diff(times) >= 0) and np.all(amplitudes == 1.0)
    np.testing.assert_array_equal(templates, clusters)
    expected = _samples(sd)
    for i in range(sd.N):
        np.testing.assert_array_equal(times[clusters == i], expected[i])

    chan_map = np.load(folder / "channel_map.npy")
    assert chan_map.dtype == np.int32
    np.testing.assert_array_equal(chan_map, [1, 11, 21, 31, 41, 51, 61, 71])
    np.testing.assert_array_equal(np.load(folder / "channel_positions.npy"), sd.unit_locations)

    params = {}
    for node in ast.parse((folder / "params.py").read_text()).body:
        params[node.targets[0].id] = ast.literal_eval(node.value)
    assert params == {
        "dat_path": "",
        "n_channels_dat": 72,
        "dtype": "int16",
        "offset": 0,
        "sample_rate": FS,
        "hp_filtered": False,
    }
    rows = [line.split("\t") for line in (folder / "cluster_info.tsv").read_text().splitlines()]
    assert rows[0] == ["cluster_id", "group", "ch", "n_spikes", "electrode"]
    assert [r[0] for r in rows[1:]] == [str(i) for i in range(8)]
    assert [int(r[3]) for r in rows[1:]] == [t.size for t in sd.train]
    assert [int(r[2]) for r in rows[1:]] == list(range(8))  # row in channel_map.npy
    group = (folder / "cluster_group.tsv").read_text().splitlines()
    assert group == ["cluster_id\tgroup"] + [f"{i}\tunsorted" for i in range(8)]


def test_units_without_electrodes_share_one_dummy_channel(tmp_path):
    _export(synthetic("empty_units"), tmp_path / "ks")
    np.testing.assert_array_equal(np.load(tmp_path / "ks" / "channel_map.npy"), [0])
    np.testing.assert_array_equal(np.load(tmp_path / "ks" / "channel_positions.npy"), [[0, 0]])
    assert "n_channels_dat = 1\n" in (tmp_path / "ks" / "params.py").read_text()


def test_channels_follow_the_order_of_their_first_unit(tmp_path):
    attrs = [{"electrode": e, "location": [float(e), 1.0]} for e in (5, 3, 5, 1)]
    sd = SpikeData([[1.0], [2.0], [3.0], [4.0]], length=5.0, neuron_attributes=attrs)
    _export(sd, tmp_path / "ks")
    chan_map = np.load(tmp_path / "ks" / "channel_map.npy")
    np.testing.assert_array_equal(chan_map, [5, 3, 1])  # one entry per channel, as Phy wants
    np.testing.assert_array_equal(
        np.load(tmp_path / "ks" / "channel_positions.npy"), [[5, 1], [3, 1], [1, 1]]
    )
    table = (tmp_path / "ks" / "cluster_info.tsv").read_text().splitlines()
    rows = list(csv.DictReader(table, delimiter="\t"))
    assert [int(r["ch"]) for r in rows] == [0, 1, 0, 2]  # the unit's row in channel_map.npy
    model = _phylib_model(tmp_path / "ks")
    try:
        np.testing.assert_array_equal(model.channel_mapping, [5, 3, 1])
    finally:
        model.close()


def test_one_electrode_per_unit_gives_spikelabs_channel_map_unit_by_unit(tmp_path):
    attrs = [{"electrode": 4}, {"electrode": 7}, {"electrode": 2}]
    sd = SpikeData([[5.0, 10.0, 15.0], [2.5, 20.0], [8.0]], length=25.0, neuron_attributes=attrs)
    sd.to_kilosort(tmp_path / "ks", fs_Hz=1000.0)
    np.testing.assert_array_equal(np.load(tmp_path / "ks" / "channel_map.npy"), [4, 7, 2])


def test_to_kilosort_takes_fs_from_the_metadata_unless_given(tmp_path):
    sd = SpikeData([[15.0]], length=20.0, metadata={"fs_Hz": 1000.0})
    sd.to_kilosort(tmp_path / "meta")
    assert "sample_rate = 1000.0" in (tmp_path / "meta" / "params.py").read_text()
    np.testing.assert_array_equal(np.load(tmp_path / "meta" / "spike_times.npy"), [15])
    sd.to_kilosort(tmp_path / "given", fs_Hz=2000.0)
    np.testing.assert_array_equal(np.load(tmp_path / "given" / "spike_times.npy"), [30])
    with pytest.raises(ExportError, match=r"pass fs_Hz \(Hz\) or set metadata\['fs_Hz'\]"):
        SpikeData([[15.0]], length=20.0).to_kilosort(tmp_path / "none")
    with pytest.raises(ExportError, match=r"metadata\['fs_Hz'\]"):
        SpikeData([[1.0]], metadata={"fs_Hz": "fast"}).to_kilosort(tmp_path / "bad")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["given", "meta"]


@pytest.mark.parametrize(
    "sd",
    [
        SpikeData([], length=7.0, start_time=3.0),
        SpikeData([[], [], []], length=25.0, start_time=-5.0),
        SpikeData([[], []], length=0.0),
    ],
    ids=["zero units", "all units empty", "all units empty, length 0"],
)
@pytest.mark.parametrize("time_unit", ["samples", "ms"])
def test_zero_units_and_all_empty_units_keep_n_start_and_length(tmp_path, sd, time_unit):
    _export(sd, tmp_path / "ks", time_unit=time_unit)
    assert_same_trains(sd, load_spikedata_from_kilosort(tmp_path / "ks", time_unit=time_unit))


def test_options_n_channels_dtype_and_dat_path_reach_params_py(tmp_path):
    _export(fixture("small"), tmp_path / "ks", n_channels=128, dtype="float32", dat_path="r.bin")
    text = (tmp_path / "ks" / "params.py").read_text()
    assert "n_channels_dat = 128\n" in text and "dtype = 'float32'\n" in text
    assert "dat_path = 'r.bin'\n" in text


def test_spikes_at_the_same_sample_keep_unit_order(tmp_path):
    sd = SpikeData([[5.0, 7.0], [1.0, 5.0], [5.0]], length=10.0)
    _export(sd, tmp_path / "ks", fs_Hz=1000.0, cluster_ids=[30, 10, 20])
    np.testing.assert_array_equal(np.load(tmp_path / "ks" / "spike_times.npy"), [1, 5, 5, 5, 7])
    np.testing.assert_array_equal(
        np.load(tmp_path / "ks" / "spike_clusters.npy"), [10, 30, 10, 20, 30]
    )
    np.testing.assert_array_equal(np.load(tmp_path / "ks" / "spike_templates.npy"), [1, 0, 1, 2, 0])


def test_times_too_large_to_pack_with_the_unit_fall_back_to_a_stable_argsort(tmp_path):
    big = 2.0**61  # samples at 1 kHz; 2 bits of unit index no longer fit beside them
    sd = SpikeData([[big, big + 2**10], [0.0, big], [big]], length=big + 2**11)
    _export(sd, tmp_path / "ks", fs_Hz=1000.0)
    times = np.load(tmp_path / "ks" / "spike_times.npy")
    np.testing.assert_array_equal(times, np.array([0, big, big, big, big + 2**10], np.int64))
    np.testing.assert_array_equal(np.load(tmp_path / "ks" / "spike_clusters.npy"), [1, 0, 1, 2, 0])


def test_cluster_ids_argument_is_written_and_comes_back_as_attributes(tmp_path):
    sd = fixture("empty_units")
    ids = [7, 3, 12, 40, 5, 9]
    _export(sd, tmp_path / "ks", cluster_ids=ids)
    clusters = np.load(tmp_path / "ks" / "spike_clusters.npy")
    assert set(clusters.tolist()) == {7, 12, 40, 9}  # units 1 and 4 are empty
    back = load_spikedata_from_kilosort(tmp_path / "ks")
    assert [a["cluster_id"] for a in back.neuron_attributes] == ids
    assert_same_trains(sd, back, atol_ms=_half_sample())


def test_sparse_huge_cluster_ids_round_trip(tmp_path):
    sd = SpikeData([[1.0, 3.0], [2.0], []], length=4.0)
    ids = [2**31 - 1, 0, 5_000_000]
    _export(sd, tmp_path / "ks", fs_Hz=1000.0, cluster_ids=ids)
    np.testing.assert_array_equal(
        np.load(tmp_path / "ks" / "spike_clusters.npy"), ids[:1] + [0, ids[0]]
    )
    back = load_spikedata_from_kilosort(tmp_path / "ks")
    assert [a["cluster_id"] for a in back.neuron_attributes] == ids
    assert_same_trains(sd, back)


def test_more_units_than_fit_in_16_bits_round_trip(tmp_path):
    n = 70_000
    sd = SpikeData([[float(i % 997)] if i % 3 else [] for i in range(n)], length=1000.0)
    _export(sd, tmp_path / "ks", fs_Hz=1000.0)
    times = np.load(tmp_path / "ks" / "spike_times.npy")
    assert times.size == sd.n_spikes and np.all(np.diff(times) >= 0)
    back = load_spikedata_from_kilosort(tmp_path / "ks")
    assert_same_trains(sd, back)
    assert back.neuron_attributes[-1]["cluster_id"] == n - 1


def test_cluster_id_attributes_are_used_and_survive_a_second_round_trip(tmp_path):
    sd = synthetic("many_units")  # 23 units, cluster_id 100..122, electrodes 0..44
    _export(sd, tmp_path / "ks", fs_Hz=30000.0)
    assert set(np.load(tmp_path / "ks" / "spike_clusters.npy").tolist()) <= set(range(100, 123))
    back = load_spikedata_from_kilosort(tmp_path / "ks")
    assert back.neuron_attributes == sd.neuron_attributes
    _export(back, tmp_path / "again", fs_Hz=30000.0)
    again = load_spikedata_from_kilosort(tmp_path / "again")
    assert_same_trains(back, again)  # samples -> ms -> samples is stable
    assert again.neuron_attributes == sd.neuron_attributes


def test_scalar_attributes_and_labels_become_cluster_info_columns(tmp_path):
    attrs = [
        {"KSLabel": "good", "group": "good", "snr": 4.5, "name": "a\tb", "location": [1.0, 2.0]},
        {"KSLabel": "mua", "snr": np.float32(2.0), "flag": True},
    ]
    sd = SpikeData([[1.0], [2.0]], length=3.0, neuron_attributes=attrs)
    _export(sd, tmp_path / "ks")
    with open(tmp_path / "ks" / "cluster_info.tsv", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert rows[0] == {
        "cluster_id": "0",
        "group": "good",
        "KSLabel": "good",
        "ch": "0",
        "n_spikes": "1",
        "snr": "4.5",
        "name": "a\tb",
        "flag": "",
    }
    assert rows[1]["group"] == "unsorted" and rows[1]["flag"] == "True"
    back = load_spikedata_from_kilosort(tmp_path / "ks")
    assert _attrs_without_cluster_id(back) == [
        {"KSLabel": "good", "group": "good", "snr": 4.5, "name": "a\tb", "location": [1.0, 2.0]},
        {"KSLabel": "mua", "snr": 2.0, "flag": True},
    ]


def test_group_relabelled_in_phy_is_picked_up_next_to_the_saved_attributes(tmp_path):
    sd = fixture("small")
    _export(sd, tmp_path / "ks")
    info = tmp_path / "ks" / "cluster_info.tsv"
    info.write_text(info.read_text().replace("3\tunsorted", "3\tnoise"))
    back = load_spikedata_from_kilosort(tmp_path / "ks")
    assert back.neuron_attributes[3]["group"] == "noise"
    assert "group" not in back.neuron_attributes[2]
    assert back.neuron_attributes[3]["location"] == [52.5, 0.0]


def test_clusters_changed_in_phy_fall_back_to_the_cluster_table_with_a_warning(tmp_path):
    sd = fixture("small")
    _export(sd, tmp_path / "ks")
    folder = tmp_path / "ks"
    clusters = np.load(folder / "spike_clusters.npy")
    np.save(folder / "spike_clusters.npy", np.where(clusters == 7, 6, clusters))  # merge 7 -> 6
    info = folder / "cluster_info.tsv"
    info.write_text("".join(info.read_text().splitlines(keepends=True)[:-1]))
    with pytest.warns(UserWarning, match="no longer match"):
        back = load_spikedata_from_kilosort(folder)
    assert back.N == 7 and (back.start_time, back.length) == (0.0, 10000.0)
    assert back.train[6].size == sd.train[6].size + sd.train[7].size
    assert back.neuron_attributes[0] == {
        "group": "unsorted",
        "ch": 0,
        "n_spikes": sd.train[0].size,
        "electrode": 1,
        "cluster_id": 0,
    }


def test_export_replaces_an_existing_folder_and_drops_stale_files(tmp_path):
    (tmp_path / "ks").mkdir()
    (tmp_path / "ks" / "templates.npy").write_bytes(b"stale")
    _export(fixture("small"), tmp_path / "ks")
    assert not (tmp_path / "ks" / "templates.npy").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ks"]


def test_custom_file_names_are_used_exactly(tmp_path):
    sd = fixture("small")
    names = {"spike_times_file": "times_ms", "spike_clusters_file": "ids.npy"}
    paths = _export(sd, tmp_path / "ks", time_unit="ms", **names)
    assert paths == (str(tmp_path / "ks" / "times_ms"), str(tmp_path / "ks" / "ids.npy"))
    back = load_spikedata_from_kilosort(tmp_path / "ks", time_unit="ms", **names)
    assert_same_trains(sd, back)


# ------------------------------------------------------------------------- SpikeInterface
def _si_trains(sorting):
    return {int(u): sorting.get_unit_spike_train(u, segment_index=0) for u in sorting.unit_ids}


@pytest.mark.parametrize("name", ["small", "empty_units", "neg_start", "many_units"])
def test_spikeinterface_read_phy_gives_every_unit_with_the_same_samples(tmp_path, name):
    from spikeinterface.extractors import read_phy

    sd = synthetic(name) if name == "many_units" else fixture(name)
    fs = 30000.0 if name == "many_units" else FS
    _export(sd, tmp_path / "ks", fs_Hz=fs)
    sorting = read_phy(tmp_path / "ks")
    ids = [a["cluster_id"] for a in sd.neuron_attributes] if name == "many_units" else None
    ids = ids or list(range(sd.N))
    assert sorting.get_sampling_frequency() == fs
    assert list(sorting.unit_ids) == ids  # cluster_info.tsv order, empty units included
    trains = _si_trains(sorting)
    for uid, expected in zip(ids, _samples(sd, fs), strict=True):
        np.testing.assert_array_equal(trains[uid], expected)
    assert list(sorting.get_property("quality")) == ["unsorted"] * sd.N
    assert list(sorting.get_property("n_spikes")) == [t.size for t in sd.train]
    # nothing is labelled noise, so excluding noise keeps every unit
    assert list(read_phy(tmp_path / "ks", exclude_cluster_groups=["noise"]).unit_ids) == ids


def test_spikeinterface_read_kilosort_drops_empty_units_unless_asked_to_keep_them(tmp_path):
    from spikeinterface.extractors import read_kilosort

    sd = fixture("empty_units")
    _export(sd, tmp_path / "ks")
    sorting = read_kilosort(tmp_path / "ks")
    assert list(sorting.unit_ids) == [0, 2, 3, 5]  # units 1 and 4 have no spike
    expected = _samples(sd)
    for uid, train in _si_trains(sorting).items():
        np.testing.assert_array_equal(train, expected[uid])
    kept = read_kilosort(tmp_path / "ks", remove_empty_units=False)
    assert list(kept.unit_ids) == list(range(6))
    assert kept.get_unit_spike_train(1).size == 0
    # without a KSLabel column keep_good_only has nothing to filter on and keeps every unit
    assert list(read_kilosort(tmp_path / "ks", keep_good_only=True).unit_ids) == [0, 2, 3, 5]


def test_spikeinterface_keep_good_only_follows_a_kslabel_attribute(tmp_path):
    from spikeinterface.extractors import read_kilosort

    attrs = [{"KSLabel": "good"}, {"KSLabel": "mua"}, {"KSLabel": "good"}]
    sd = SpikeData([[1.0], [2.0], [3.0]], length=4.0, neuron_attributes=attrs)
    _export(sd, tmp_path / "ks")
    assert list(read_kilosort(tmp_path / "ks", keep_good_only=True).unit_ids) == [0, 2]


def test_spikeinterface_opens_folders_without_units_or_spikes(tmp_path):
    from spikeinterface.extractors import read_kilosort, read_phy

    _export(synthetic("zero_units"), tmp_path / "zero")
    assert read_phy(tmp_path / "zero").get_num_units() == 0
    _export(SpikeData([[], []], length=5.0), tmp_path / "silent")
    sorting = read_phy(tmp_path / "silent")
    assert list(sorting.unit_ids) == [0, 1] and sorting.get_unit_spike_train(0).size == 0
    assert read_kilosort(tmp_path / "silent").get_num_units() == 0
    one = _export(synthetic("one_spike"), tmp_path / "one")
    np.testing.assert_array_equal(read_phy(tmp_path / "one").get_unit_spike_train(0), [250])
    assert one[0].endswith("spike_times.npy")


# --------------------------------------------------------------------------------- phylib
def _phylib_model(folder):
    from phylib.io.model import load_model

    return load_model(folder / "params.py")


@pytest.mark.parametrize("name", ["small", "empty_units", "neg_start", "many_units"])
def test_phylib_template_model_opens_the_folder_with_the_same_spikes(tmp_path, name):
    sd = synthetic(name) if name == "many_units" else fixture(name)
    fs = 30000.0 if name == "many_units" else FS
    _export(sd, tmp_path / "ks", fs_Hz=fs)
    attrs = sd.neuron_attributes or [{}] * sd.N
    ids = np.array([a.get("cluster_id", i) for i, a in enumerate(attrs)])
    model = _phylib_model(tmp_path / "ks")
    try:
        assert model.sample_rate == fs and model.n_spikes == sd.n_spikes
        assert model.traces is None  # dat_path '' means: no raw data
        for uid, expected in zip(ids, _samples(sd, fs), strict=True):
            np.testing.assert_array_equal(
                model.spike_samples[model.spike_clusters == uid], expected
            )
        assert np.all(np.diff(model.spike_samples) >= 0)
        np.testing.assert_allclose(model.spike_times, model.spike_samples / fs)
        # phylib lists only clusters that have spikes; its metadata still names every unit
        np.testing.assert_array_equal(model.cluster_ids, ids[[t.size > 0 for t in sd.train]])
        assert sorted(model.metadata["group"]) == sorted(ids.tolist())
        assert model.channel_positions.shape == (model.n_channels, 2)
    finally:
        model.close()


def test_phylib_accepts_a_dat_path_that_does_not_exist(tmp_path):
    _export(fixture("small"), tmp_path / "ks", dat_path="recording.dat")
    model = _phylib_model(tmp_path / "ks")
    try:
        assert model.traces is None and model.n_spikes == 1396
    finally:
        model.close()


@pytest.mark.xfail(
    raises=AssertionError,
    strict=True,
    reason="phylib 2.7 squeezes every array it reads, so one spike becomes a 0-d array and "
    "TemplateModel asserts spike_times.ndim == 1 (upstream limitation; our loader and "
    "SpikeInterface read this folder)",
)
def test_phylib_cannot_open_a_folder_with_a_single_spike(tmp_path):
    _export(synthetic("one_spike"), tmp_path / "ks")
    _phylib_model(tmp_path / "ks")


@pytest.mark.xfail(
    raises=ValueError,
    strict=True,
    reason="phylib 2.7 takes np.max of the template ids, which fails when there are no "
    "spikes (upstream limitation; our loader and SpikeInterface read this folder)",
)
def test_phylib_cannot_open_a_folder_without_spikes(tmp_path):
    _export(SpikeData([[], []], length=5.0), tmp_path / "ks")
    _phylib_model(tmp_path / "ks")


# -------------------------------------------------------------------- argument errors
@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"fs_Hz": 0}, ExportError, "fs_Hz"),
        ({"fs_Hz": -20000.0}, ExportError, "fs_Hz"),
        ({"fs_Hz": math.nan}, ExportError, "fs_Hz"),
        ({"fs_Hz": math.inf}, ExportError, "fs_Hz"),
        ({"fs_Hz": "fast"}, ExportError, "fs_Hz"),
        ({"fs_Hz": FS, "time_unit": "us"}, ExportError, "time unit"),
        ({"fs_Hz": FS, "cluster_ids": [0, 1, 2]}, ExportError, "one id per unit"),
        ({"fs_Hz": FS, "cluster_ids": [0, 1, 2, 3, 4, 4]}, ExportError, "unique"),
        ({"fs_Hz": FS, "cluster_ids": [0, 1, 2, 3, 4, -5]}, ExportError, "0.."),
        ({"fs_Hz": FS, "cluster_ids": [0, 1, 2, 3, 4, 5.5]}, ExportError, "integers"),
        ({"fs_Hz": FS, "cluster_ids": list("abcdef")}, ExportError, "integers"),
        ({"fs_Hz": FS, "spike_times_file": "a/b.npy"}, ExportError, "plain file name"),
        ({"fs_Hz": FS, "spike_clusters_file": "params.py"}, ExportError, "overwrite"),
        ({"fs_Hz": FS, "spike_clusters_file": "spike_times.npy"}, ExportError, "both"),
        ({"fs_Hz": FS, "n_channels": 3}, ExportError, "n_channels"),
        ({"fs_Hz": FS, "dtype": "object"}, ExportError, "dtype"),
        ({}, TypeError, "fs_Hz"),
    ],
)
def test_bad_arguments_raise_before_any_file_or_folder_exists(tmp_path, kwargs, error, message):
    with pytest.raises(error, match=message):
        export_spikedata_to_kilosort(fixture("empty_units"), tmp_path / "out" / "ks", **kwargs)
    assert not any(tmp_path.iterdir())


def test_duplicated_cluster_id_attributes_raise_before_writing(tmp_path):
    sd = SpikeData([[1.0], [2.0]], neuron_attributes=[{"cluster_id": 3}, {"cluster_id": 3}])
    with pytest.raises(ExportError, match=r"cluster_id'\] must be unique.*\[3\]"):
        _export(sd, tmp_path / "ks")
    assert not any(tmp_path.iterdir())


def test_a_file_in_the_way_of_the_folder_raises_and_is_left_alone(tmp_path):
    (tmp_path / "ks").write_text("keep me")
    with pytest.raises(ExportError, match="a file is in the way"):
        _export(fixture("small"), tmp_path / "ks")
    assert (tmp_path / "ks").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ks"]


def test_a_file_in_the_way_is_also_the_file_exists_error_spikelab_raises(tmp_path):
    (tmp_path / "ks").write_text("keep me")
    with pytest.raises(FileExistsError, match="a file is in the way") as err:
        _export(fixture("small"), tmp_path / "ks")
    assert isinstance(err.value, ExportError)
    assert (tmp_path / "ks").read_text() == "keep me"


def test_an_unknown_time_unit_is_named_as_the_time_unit_argument(tmp_path):
    with pytest.raises(ExportError, match=r"^time_unit must be one of ms, s, samples.*'us'"):
        _export(fixture("small"), tmp_path / "ks", time_unit="us")
    assert not any(tmp_path.iterdir())


def test_failure_mid_export_keeps_the_old_folder_and_leaves_no_temporary(tmp_path, monkeypatch):
    _export(fixture("small"), tmp_path / "ks")
    before = {p.name: p.read_bytes() for p in (tmp_path / "ks").iterdir()}

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(kilosort_write, "_write_cluster_tables", boom)
    with pytest.raises(OSError, match="disk full"):
        _export(fixture("empty_units"), tmp_path / "ks")
    assert {p.name: p.read_bytes() for p in (tmp_path / "ks").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ks"]
    with pytest.raises(OSError, match="disk full"):
        _export(fixture("empty_units"), tmp_path / "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ks"]


# ---------------------------------------------------------------------------- loading
def test_loader_reads_a_plain_kilosort_folder_without_our_side_file(tmp_path):
    folder = tmp_path / "ks"
    folder.mkdir()
    (folder / "params.py").write_text(
        "dat_path = 'raw.bin'\nn_channels_dat = 4\ndtype = 'int16'\noffset = 0\n"
        "sample_rate = 30000.\nhp_filtered = False\n"
    )
    np.save(folder / "spike_times.npy", np.array([[30], [60], [90], [3000]], dtype=np.uint64))
    np.save(folder / "spike_templates.npy", np.array([2, 0, 2, 11], dtype=np.uint32))
    (folder / "cluster_group.tsv").write_text("cluster_id\tgroup\n0\tgood\n2\tmua\n5\tnoise\n")
    sd = load_spikedata_from_kilosort(folder)
    assert sd.N == 4 and (sd.start_time, sd.length) == (0.0, 100.0)
    assert [a["cluster_id"] for a in sd.neuron_attributes] == [0, 2, 5, 11]
    assert [a.get("group") for a in sd.neuron_attributes] == ["good", "mua", "noise", None]
    np.testing.assert_array_equal(sd.train[1], [1.0, 3.0])
    assert sd.train[2].size == 0
    assert sd.metadata == {"fs_Hz": 30000.0}
    with pytest.warns(UserWarning, match="overrides sample_rate"):
        longer = load_spikedata_from_kilosort(folder, 1000.0, length_ms=5000.0, start_time_ms=0)
    np.testing.assert_array_equal(longer.train[1], [30.0, 90.0])
    assert longer.length == 5000.0


def test_cluster_info_tsv_keeps_good_and_mua_units_as_spikelab_does(tmp_path):
    sd = fixture("small")
    for i, group in ((2, "good"), (5, "mua"), (6, "noise")):
        sd.neuron_attributes[i]["group"] = group
    _export(sd, tmp_path / "ks")
    back = load_spikedata_from_kilosort(tmp_path / "ks", cluster_info_tsv="cluster_info.tsv")
    assert [a["cluster_id"] for a in back.neuron_attributes] == [2, 5]
    for unit, i in enumerate([2, 5]):
        np.testing.assert_allclose(back.train[unit], sd.train[i], atol=_half_sample())
    assert (back.start_time, back.length) == (sd.start_time, sd.length)
    every = load_spikedata_from_kilosort(
        tmp_path / "ks", cluster_info_tsv="cluster_info.tsv", include_noise=True
    )
    assert every.N == sd.N
    with pytest.warns(UserWarning, match="no such cluster table"):
        assert load_spikedata_from_kilosort(tmp_path / "ks", cluster_info_tsv="x.tsv").N == sd.N


def test_channel_map_file_arguments_are_accepted_and_not_read(tmp_path):
    sd = fixture("small")
    _export(sd, tmp_path / "ks")
    assert load_spikedata_from_kilosort(tmp_path / "ks", channel_map_file="channel_map.npy").N == 8
    with pytest.warns(UserWarning, match="channel_positions_file='p.npy' is not read"):
        back = load_spikedata_from_kilosort(tmp_path / "ks", channel_positions_file="p.npy")
    assert _attrs_without_cluster_id(back) == sd.neuron_attributes


def test_params_py_is_parsed_never_executed(tmp_path):
    sd = fixture("small")
    _export(sd, tmp_path / "ks")
    sentinel = tmp_path / "pwned"
    params = tmp_path / "ks" / "params.py"
    params.write_text(
        f"import os\nos.system('touch {sentinel}')\n{params.read_text()}"
        f"extra = open({str(sentinel)!r}, 'w')\n"
    )
    back = load_spikedata_from_kilosort(tmp_path / "ks")
    assert not sentinel.exists()
    assert_same_trains(sd, back, atol_ms=_half_sample())


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("no folder", "no such KiloSort/Phy folder"),
        ("no spike_times", "spike times file spike_times.npy is missing"),
        ("no clusters", "spike clusters file spike_clusters.npy is missing"),
        ("length mismatch", "has 1396 spikes but spike_clusters.npy has 10"),
        ("syntax error", "not a readable params.py"),
        ("sample_rate code", "sample_rate is not a plain number"),
        ("sample_rate text", "sample_rate must be a number"),
        ("no params", "has no params.py"),
        ("corrupt npy", "not a readable .npy"),
        ("bad side file", "not readable JSON"),
        ("unit mismatch", "holds times in 'samples'"),
    ],
)
def test_broken_folder_gives_a_load_error_naming_folder_and_fault(tmp_path, breakage, message):
    folder = tmp_path / "ks"
    _export(fixture("small"), folder)
    if breakage == "no folder":
        shutil.rmtree(folder)
    elif breakage == "no spike_times":
        (folder / "spike_times.npy").unlink()
    elif breakage == "no clusters":
        (folder / "spike_clusters.npy").unlink()
        (folder / "spike_templates.npy").unlink()
    elif breakage == "length mismatch":
        np.save(folder / "spike_clusters.npy", np.zeros(10, np.int32))
    elif breakage == "syntax error":
        (folder / "params.py").write_text("sample_rate = = 3\n")
    elif breakage == "sample_rate code":
        (folder / "params.py").write_text("sample_rate = float('3e4')\n")
    elif breakage == "sample_rate text":
        (folder / "params.py").write_text("sample_rate = 'fast'\n")
    elif breakage == "no params":
        (folder / "params.py").unlink()
    elif breakage == "corrupt npy":
        (folder / "spike_times.npy").write_bytes(b"\x93NUMPY garbage")
    elif breakage == "bad side file":
        (folder / "spikelab.json").write_text("{")
    elif breakage == "unit mismatch":
        with pytest.raises(LoadError, match=message) as err:
            load_spikedata_from_kilosort(folder, time_unit="ms")
        assert str(folder) in str(err.value)
        return
    with pytest.raises(LoadError, match=message) as err:
        load_spikedata_from_kilosort(folder)
    assert str(folder) in str(err.value)


def test_loader_uses_spike_templates_when_spike_clusters_is_missing(tmp_path):
    sd = fixture("empty_units")
    _export(sd, tmp_path / "ks")
    (tmp_path / "ks" / "spike_clusters.npy").unlink()
    back = load_spikedata_from_kilosort(tmp_path / "ks")
    assert_same_trains(sd, back, atol_ms=_half_sample())


def test_loader_fs_argument_overrides_params_py_with_a_warning(tmp_path):
    _export(SpikeData([[15.0]], length=20.0), tmp_path / "ks")  # 300 samples at 20 kHz
    with pytest.warns(UserWarning, match="overrides sample_rate"):
        back = load_spikedata_from_kilosort(tmp_path / "ks", 10000.0, length_ms=40.0)
    np.testing.assert_array_equal(back.train[0], [30.0])
    with pytest.raises(LoadError, match="fs_Hz"):
        load_spikedata_from_kilosort(tmp_path / "ks", -1.0)
    with pytest.warns(UserWarning), pytest.raises(LoadError, match="outside the recording"):
        load_spikedata_from_kilosort(tmp_path / "ks", 10000.0)


# ------------------------------------------------------------------ windows of the time sort
def _reference_order(sd, fs, time_unit):
    """(times, unit index) of a plain stable argsort of the unit-major spikes by time."""
    offset = -int(np.rint(sd.start_time * fs / 1000)) if sd.start_time < 0 else 0
    conv = {"samples": lambda t: np.rint(t * (fs / 1000.0)).astype(np.int64) + offset}
    conv.update(ms=lambda t: t.astype(np.float64), s=lambda t: t / 1000.0)
    times = np.concatenate([conv[time_unit](np.sort(t)) for t in sd.train])
    index = np.repeat(np.arange(sd.N), [len(t) for t in sd.train]).astype(np.int32)
    order = np.argsort(times, kind="stable")
    return times[order], index[order]


def _tied_recording():
    """Spikes on a coarse grid (many share a sample across units, also across window edges),
    empty units, one unit far longer than a window, one time shared by every unit."""
    rng = np.random.default_rng(8)
    sizes = [0, 40, 3, 0, 400, 1, 0, 25, 60, 0]
    train = [np.sort(rng.integers(0, 300, n) * 0.5) for n in sizes]
    train = [np.append(t, 200.0) if t.size else t for t in train]
    return SpikeData([np.sort(t) for t in train], length=220.0, start_time=-20.0)


@pytest.mark.parametrize("window", [1, 2, 7, 64, None])
@pytest.mark.parametrize("time_unit", ["samples", "ms", "s"])
def test_time_windows_of_any_size_give_the_stable_global_order(
    tmp_path, monkeypatch, window, time_unit
):
    """Samples are sorted in time across units (what Phy requires); ms and s, a layout only
    SpikeLab reads, are written unit by unit as SpikeLab 0.1.2 writes them."""
    sd = _tied_recording()
    sd.train[2] = sd.train[2][::-1].copy()  # a unit mutated out of order after construction
    if window:
        monkeypatch.setattr(time_order, "WINDOW_SPIKES", window)
    _export(sd, tmp_path / "ks", fs_Hz=1000.0, time_unit=time_unit, cluster_ids=range(50, 60))
    times, index = _reference_order(sd, 1000.0, time_unit)
    if time_unit != "samples":
        order = np.argsort(index, kind="stable")  # unit by unit, each unit in time order
        times, index = times[order], index[order]
    got = np.load(tmp_path / "ks" / "spike_times.npy")
    assert got.dtype == times.dtype and got.tobytes() == times.tobytes()
    np.testing.assert_array_equal(np.load(tmp_path / "ks" / "spike_templates.npy"), index)
    np.testing.assert_array_equal(np.load(tmp_path / "ks" / "spike_clusters.npy"), index + 50)
    assert np.load(tmp_path / "ks" / "amplitudes.npy").shape == times.shape


def test_tiny_windows_write_the_same_folder_as_the_default(tmp_path, monkeypatch):
    sd = synthetic("many_units")
    _export(sd, tmp_path / "default")
    monkeypatch.setattr(time_order, "WINDOW_SPIKES", 3)
    _export(sd, tmp_path / "tiny")
    for path in sorted((tmp_path / "default").iterdir()):
        assert (tmp_path / "tiny" / path.name).read_bytes() == path.read_bytes(), path.name
