"""Files other tools wrote (SpikeInterface's Phy export, a KiloSort 2 folder, neuroconv's and
plain pynwb's NWB files, SpikeLab 0.1.2's HDF5 files) read by our loaders: what survives is
compared with what the writer was given, then each is converted to every format through the
registry, read back and verified as the workflow verifies, labels included where the target
has room for them. Also: our own HDF5 files are read without being told their layout."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
from foreign_files import (
    FS,
    LABELS,
    SPIKELAB_HDF5,
    Written,
    write_hdf5_with_spikelab_0_1_2,
    write_kilosort2_folder,
    write_nwb_with_neuroconv,
    write_nwb_with_pynwb,
    write_phy_from_spikeinterface,
)

from spikelab.formats.errors import LoadError
from spikelab.formats.hdf5 import export_spikedata_to_hdf5, load_spikedata_from_hdf5
from spikelab.formats.kilosort import load_spikedata_from_kilosort
from spikelab.formats.nwb import load_spikedata_from_nwb
from spikelab.formats.registry import get_format
from spikelab.spikedata import SpikeData
from spikelab.workflow.targets import Target
from spikelab.workflow.verify import compare_spikedata

#: Each foreign file: how it is written, and the format whose reader takes it.
WRITERS = {
    "phy_spikeinterface": (write_phy_from_spikeinterface, "kilosort"),
    "kilosort2": (write_kilosort2_folder, "kilosort"),
    "nwb_neuroconv": (write_nwb_with_neuroconv, "nwb"),
    "nwb_pynwb_electrodes": (lambda d: write_nwb_with_pynwb(d, electrodes=True), "nwb"),
    "nwb_pynwb_units": (lambda d: write_nwb_with_pynwb(d, electrodes=False), "nwb"),
}

#: Every output the workflow can make: all four HDF5 styles, NWB, KiloSort, pickle.
TARGETS = {
    "hdf5/ragged": Target("hdf5/ragged", "hdf5", {"style": "ragged"}),
    "hdf5/ragged_samples": Target(
        "hdf5/ragged_samples", "hdf5", {"style": "ragged", "spike_times_unit": "samples"}
    ),
    "hdf5/raster": Target("hdf5/raster", "hdf5", {"style": "raster", "raster_bin_size_ms": 1.0}),
    "hdf5/group": Target("hdf5/group", "hdf5", {"style": "group"}),
    "hdf5/paired": Target("hdf5/paired", "hdf5", {"style": "paired"}),
    "nwb": Target("nwb", "nwb", {}),
    "kilosort": Target("kilosort", "kilosort", {}),
    "pickle": Target("pickle", "pickle", {}),
}


@pytest.fixture(scope="module")
def foreign(tmp_path_factory) -> dict[str, Written]:
    folder = tmp_path_factory.mktemp("foreign")
    return {name: write(folder) for name, (write, _) in WRITERS.items()}


def _read(name: str, written: Written, **kwargs) -> SpikeData:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a foreign file reads without a warning
        return get_format(WRITERS[name][1]).reader()(written.path, **kwargs)


def _unit_ids(name: str, sd: SpikeData) -> list:
    key = {"kilosort": "cluster_id"}.get(WRITERS[name][1])
    if key is None:  # NWB: neuroconv's unit_name, else the Units table's ids
        key = "unit_name" if name == "nwb_neuroconv" else "unit_id"
    return [a[key] for a in sd.neuron_attributes]


# ------------------------------------------------------------------- what the loaders read
@pytest.mark.parametrize("name", list(WRITERS))
def test_foreign_file_reads_what_its_writer_was_given(foreign, name):
    written = foreign[name]
    sd = _read(name, written)
    assert sd.N == len(written.trains)
    assert _unit_ids(name, sd) == written.unit_ids
    if written.in_samples:  # within half a sample
        tol = 0.5 * 1000.0 / written.fs_Hz
        assert sd.metadata["fs_Hz"] == written.fs_Hz
    else:  # given in s: t * 1000 exactly as the writer's caller computed it
        tol = 0.0
    for unit, (got, want) in enumerate(zip(sd.train, written.trains_ms(), strict=True)):
        assert got.size == want.size, f"unit {unit}"
        np.testing.assert_allclose(got, want, rtol=0, atol=tol, err_msg=f"unit {unit}")
    assert sd.start_time == 0.0
    for key, labels in written.labels.items():
        assert [a[key] for a in sd.neuron_attributes] == labels, key
    for key, values in written.columns.items():
        assert [a[key] for a in sd.neuron_attributes] == values, key
    if written.electrodes is None:
        assert sd.electrodes is None
    else:
        assert sd.electrodes.tolist() == written.electrodes
        np.testing.assert_array_equal(sd.unit_locations, written.locations)


@pytest.mark.parametrize("name", [n for n, (_, fmt) in WRITERS.items() if fmt == "nwb"])
def test_foreign_nwb_reads_the_same_through_pynwb_and_h5py(foreign, name):
    a = load_spikedata_from_nwb(foreign[name].path, prefer_pynwb=True)
    b = load_spikedata_from_nwb(foreign[name].path, prefer_pynwb=False)
    assert compare_spikedata(a, b).ok
    assert a.neuron_attributes == b.neuron_attributes
    assert a.metadata == b.metadata


def test_neuroconv_vector_property_is_read_per_unit_not_as_its_index(foreign):
    """neuroconv writes a 3-value property as a column with an index: each unit gets its
    three values (pynwb hands out the index under the column's name)."""
    sd = _read("nwb_neuroconv", foreign["nwb_neuroconv"])
    locations = [a["gt_unit_locations"] for a in sd.neuron_attributes]
    assert all(len(loc) == 3 and all(isinstance(v, float) for v in loc) for loc in locations)
    from foreign_files import ground_truth

    _, sorting = ground_truth()
    np.testing.assert_allclose(locations, sorting.get_property("gt_unit_locations"), rtol=1e-6)


def test_kilosort2_template_without_spikes_is_an_empty_unit(foreign):
    sd = _read("kilosort2", foreign["kilosort2"])
    assert sd.train[5].size == 0
    assert sd.neuron_attributes[5]["KSLabel"] == "mua"


# ---------------------------------------------------------------- conversion to every format
def _convert(sd: SpikeData, target: Target, out: Path) -> tuple[SpikeData, Path]:
    fs = sd.metadata.get("fs_Hz") or FS
    path = out / target.output("rec")
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. NWB's session-start placeholder
        target.spec.writer()(sd, path, **target.exporter_kwargs("rec", fs))
        back = target.spec.reader()(path, **target.loader_kwargs(fs))
    return back, path


@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize("name", list(WRITERS))
def test_foreign_file_converts_to_every_format_and_reads_back(foreign, name, target, tmp_path):
    sd = _read(name, foreign[name])
    target = TARGETS[target]
    back, _ = _convert(sd, target, tmp_path)
    atol, ulps = target.time_tolerance(sd.metadata.get("fs_Hz") or FS)
    result = compare_spikedata(sd, back, abs_tol_ms=atol, ulps=ulps)
    assert result.ok, result.problems
    attrs = back.neuron_attributes
    if target.format == "kilosort":  # the KiloSort reader names each unit's cluster
        attrs = [{k: v for k, v in a.items() if k != "cluster_id"} for a in attrs]
        want = [{k: v for k, v in a.items() if k != "cluster_id"} for a in sd.neuron_attributes]
    else:
        want = sd.neuron_attributes
    assert attrs == want  # labels, electrodes, locations and every column
    assert back.metadata == sd.metadata


def _pynwb_units(path: Path) -> dict[str, list]:
    from pynwb import NWBHDF5IO

    with NWBHDF5IO(str(path), "r") as io:
        units = io.read().units
        return {c: list(units[c].data[:]) for c in units.colnames if c != "spike_times"}


def test_phy_labels_reach_nwb_columns_that_pynwb_reads(foreign, tmp_path):
    sd = _read("phy_spikeinterface", foreign["phy_spikeinterface"])
    _, path = _convert(sd, TARGETS["nwb"], tmp_path)
    columns = _pynwb_units(path)
    assert columns["group"] == LABELS  # Phy's curation (cluster_group.tsv)
    assert columns["quality"] == LABELS  # SpikeInterface's property (cluster_quality.tsv)
    assert columns["unit_name"] == [str(i) for i in range(len(LABELS))]


def test_kilosort_labels_reach_an_nwb_column_that_pynwb_reads(foreign, tmp_path):
    written = foreign["kilosort2"]
    sd = _read("kilosort2", written)
    _, path = _convert(sd, TARGETS["nwb"], tmp_path)
    assert _pynwb_units(path)["KSLabel"] == written.labels["KSLabel"]


def _tsv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


@pytest.mark.parametrize("name", ["nwb_pynwb_units", "nwb_neuroconv"])
def test_nwb_quality_becomes_phys_cluster_group(foreign, name, tmp_path):
    written = foreign[name]
    sd = _read(name, written)
    _, folder = _convert(sd, TARGETS["kilosort"], tmp_path)
    groups = [r["group"] for r in _tsv(folder / "cluster_group.tsv")]
    assert groups == written.labels["quality"]
    from spikeinterface.extractors import read_phy

    sorting = read_phy(folder)  # SpikeInterface reads Phy's group as its quality
    assert list(sorting.get_property("quality")) == written.labels["quality"]


@pytest.mark.parametrize("name", ["kilosort2", "phy_spikeinterface"])
def test_sorter_channels_reach_nwbs_electrodes_table(foreign, name, tmp_path):
    written = foreign[name]
    sd = _read(name, written)
    _, path = _convert(sd, TARGETS["nwb"], tmp_path)
    from pynwb import NWBHDF5IO

    with NWBHDF5IO(str(path), "r") as io:
        nwb = io.read()
        region = nwb.units["electrodes"]  # one electrode per unit: index i + 1
        np.testing.assert_array_equal(region.data[:], np.arange(1, sd.N + 1))
        rows = [int(r) for r in region.target.data[:]]
        table = nwb.electrodes
        ids = table.id.data[:]
        assert [int(ids[r]) for r in rows] == written.electrodes
        xy = np.c_[table["rel_x"].data[:], table["rel_y"].data[:]][rows]
        np.testing.assert_array_equal(xy, written.locations)


# ------------------------------------------------------------------------ params.py, safety
def test_params_py_with_a_windows_dat_path_is_parsed_not_executed(tmp_path):
    """``'C:\\Users\\...'`` is no valid Python (``\\U`` escape): the other lines still count."""
    sd = SpikeData([np.array([1.0, 2.0])], length=3.0)
    folder = tmp_path / "ks"
    get_format("kilosort").writer()(sd, folder, fs_Hz=30000.0)
    (folder / "spikelab.json").unlink()
    (folder / "params.py").write_text(
        "dat_path = 'C:\\Users\\lab\\x.bin'\nn_channels_dat = 1\nsample_rate = 30000.\n"
        "import os; os.system('touch pwned')\n"
    )
    back = load_spikedata_from_kilosort(folder)
    assert back.metadata["fs_Hz"] == 30000.0
    np.testing.assert_allclose(back.train[0], [1.0, 2.0], atol=0.5 / 30.0)
    assert not (folder / "pwned").exists() and not Path("pwned").exists()


@pytest.mark.parametrize(
    ("file", "content", "message"),
    [
        ("templates.npy", np.array([[[None]]], dtype=object), "Python objects"),
        ("templates.npy", np.zeros((2, 3)), "expected 3 dimensions"),
        ("channel_positions.npy", np.array([[None]], dtype=object), "Python objects"),
        ("channel_map.npy", np.array([0.5, 1, 2, 3]), "channel numbers"),
        ("templates_ind.npy", np.zeros(6), "expected 2 dimensions"),
    ],
)
def test_hostile_sorter_side_files_are_a_load_error_naming_the_file(
    foreign, tmp_path, file, content, message
):
    import shutil

    folder = tmp_path / "ks"
    shutil.copytree(foreign["kilosort2"].path, folder)
    np.save(folder / file, content, allow_pickle=True)
    with pytest.raises(LoadError, match=message) as info:  # nothing else, nothing unpickled
        load_spikedata_from_kilosort(folder)
    assert file in str(info.value)


@pytest.mark.parametrize(
    "ind",
    [np.full((6, 4), np.nan), np.full((6, 4), 1e300), np.full((6, 4), -1), np.full((6, 4), 99)],
)
def test_template_channels_out_of_range_leave_units_without_an_electrode(foreign, tmp_path, ind):
    import shutil

    folder = tmp_path / "ks"
    shutil.copytree(foreign["kilosort2"].path, folder)
    np.save(folder / "templates_ind.npy", ind)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sd = load_spikedata_from_kilosort(folder)
    assert sd.N == 6 and sd.electrodes is None
    assert not any("location" in a for a in sd.neuron_attributes)


def test_cluster_tables_beyond_their_budget_are_refused(foreign, tmp_path):
    import shutil

    folder = tmp_path / "ks"
    shutil.copytree(foreign["kilosort2"].path, folder)
    for i in range(65):
        (folder / f"cluster_m{i}.tsv").write_text("cluster_id\tm\n0\t1\n")
    with pytest.raises(LoadError, match="cluster_\\*.tsv tables"):
        load_spikedata_from_kilosort(folder)


def test_cluster_tables_beyond_32_mib_in_all_are_refused(foreign, tmp_path):
    import shutil

    folder = tmp_path / "ks"
    shutil.copytree(foreign["kilosort2"].path, folder)
    rows = "".join(f"{i}\t{'x' * 1000}\n" for i in range(17 << 10))  # 17 MiB: below 32
    for name in ("cluster_big1.tsv", "cluster_big2.tsv"):
        (folder / name).write_text("cluster_id\tnote\n" + rows)
    with pytest.raises(LoadError, match="cluster_big2.tsv: .*bytes"):
        load_spikedata_from_kilosort(folder)


def test_merged_cluster_tables_keep_phys_curated_group_and_clusters(tmp_path, foreign):
    """Phy's cluster_group.tsv lists the clusters and their curated label; another table adds
    columns, not the clusters a merge in Phy removed."""
    import shutil

    folder = tmp_path / "ks"
    shutil.copytree(foreign["phy_spikeinterface"].path, folder)
    (folder / "cluster_zz.tsv").write_text("cluster_id\tgroup\textra\n0\tnoise\t7\n99\tgood\t1\n")
    sd = load_spikedata_from_kilosort(folder)
    assert sd.neuron_attributes[0]["group"] == "good"  # cluster_group.tsv wins
    assert sd.neuron_attributes[0]["extra"] == 7
    assert [a["cluster_id"] for a in sd.neuron_attributes] == list(range(len(LABELS)))


def test_cluster_merged_in_phy_takes_the_template_most_of_its_spikes_came_from(foreign, tmp_path):
    """Phy merges clusters 1 and 2 into a new cluster 6: spike_clusters.npy changes,
    spike_templates.npy stays, cluster_group.tsv lists the clusters after the merge."""
    import shutil

    written = foreign["kilosort2"]
    folder = tmp_path / "ks"
    shutil.copytree(written.path, folder)
    templates = np.load(folder / "spike_templates.npy").reshape(-1)
    clusters = np.where(np.isin(templates, [1, 2]), 6, templates).astype(np.int32)
    np.save(folder / "spike_clusters.npy", clusters)
    rows = [(0, "good"), (3, "good"), (4, "mua"), (5, "noise"), (6, "good")]
    text = "".join(f"{c}\t{g}\n" for c, g in rows)
    (folder / "cluster_group.tsv").write_text("cluster_id\tgroup\n" + text)
    sd = load_spikedata_from_kilosort(folder)
    assert [a["cluster_id"] for a in sd.neuron_attributes] == [0, 3, 4, 5, 6]
    assert [a["group"] for a in sd.neuron_attributes] == [g for _, g in rows]
    main = 1 if written.trains[1].size >= written.trains[2].size else 2
    expected = [written.electrodes[t] for t in (0, 3, 4, 5, main)]
    assert sd.electrodes.tolist() == expected
    assert sd.train[4].size == written.trains[1].size + written.trains[2].size


# ------------------------------------------------------------------ HDF5 files, ours and 0.1.2
HDF5_NAMES = {
    "ragged": {
        "spike_times_dataset": "acq/st",
        "spike_times_index_dataset": "acq/ix",
        "spike_times_unit": "samples",
    },
    "raster": {"raster_dataset": "bins/r", "raster_bin_size_ms": 2.0},
    "group": {"group_per_unit": "cells", "group_time_unit": "ms"},
    "paired": {"idces_dataset": "who", "times_dataset": "when", "times_unit": "s"},
}


@pytest.mark.parametrize("style", list(HDF5_NAMES))
def test_our_hdf5_files_are_read_without_naming_their_style_or_datasets(tmp_path, style):
    sd = SpikeData(
        [np.array([1.0, 2.5, 9.0]), np.array([]), np.array([4.0])],
        length=10.0,
        neuron_attributes=[{"group": g} for g in ("good", "mua", "noise")],
        metadata={"fs_Hz": FS},
    )
    path = tmp_path / "x.h5"
    export_spikedata_to_hdf5(sd, path, style=style, fs_Hz=FS, **HDF5_NAMES[style])
    back = load_spikedata_from_hdf5(path)  # style, names, units, rate: from the file
    options = {"style": style, **HDF5_NAMES[style]}
    atol, ulps = get_format("hdf5").time_tolerance(options, FS)
    result = compare_spikedata(sd, back, abs_tol_ms=atol, ulps=ulps)
    assert result.ok, result.problems
    assert back.neuron_attributes == sd.neuron_attributes


def test_an_explicit_dataset_name_wins_over_the_files_own(tmp_path):
    sd = SpikeData([np.array([1.0, 2.0]), np.array([3.0])], length=10.0)
    path = tmp_path / "x.h5"
    export_spikedata_to_hdf5(sd, path, style="ragged")
    with h5py.File(path, "a") as f:  # a second copy of the trains, shifted by 1 s
        f.create_dataset("other", data=f["spike_times"][()] + 0.001)
        f["other"].attrs["unit"] = "s"
    back = load_spikedata_from_hdf5(path, spike_times_dataset="other")
    np.testing.assert_allclose(np.concatenate(back.train), [2.0, 3.0, 4.0], rtol=1e-12)


@pytest.fixture(scope="module")
def spikelab_hdf5(tmp_path_factory) -> dict[str, Written]:
    return write_hdf5_with_spikelab_0_1_2(tmp_path_factory.mktemp("spikelab_0_1_2"))


@pytest.mark.slow
@pytest.mark.parametrize("style", list(SPIKELAB_HDF5))
def test_spikelab_0_1_2_hdf5_files_read_with_their_names_and_convert_everywhere(
    spikelab_hdf5, style, tmp_path
):
    """SpikeLab 0.1.2 stores no style, names or units: they are given, as its loader needs."""
    written = spikelab_hdf5[style]
    options = {k: v for k, v in SPIKELAB_HDF5[style].items() if k != "style"}
    with pytest.raises(LoadError, match="cannot tell the layout"):
        load_spikedata_from_hdf5(written.path)
    sd = load_spikedata_from_hdf5(written.path, **options)
    assert sd.N == len(written.trains)
    assert (sd.start_time, sd.length) == (0.0, 5000.0)
    tol = options.get("raster_bin_size_ms", 0.0)
    for unit, (got, want) in enumerate(zip(sd.train, written.trains_ms(), strict=True)):
        assert got.size == want.size, f"unit {unit}"
        np.testing.assert_allclose(got, want, rtol=1e-15, atol=tol, err_msg=f"unit {unit}")
    for name in ("hdf5/ragged", "nwb", "kilosort", "pickle"):
        target = TARGETS[name]
        back, _ = _convert(sd, target, tmp_path / name.replace("/", "_"))
        atol, ulps = target.time_tolerance(FS)
        result = compare_spikedata(sd, back, abs_tol_ms=atol, ulps=ulps)
        assert result.ok, (name, result.problems)
