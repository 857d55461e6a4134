"""Every format as a workflow input: discovery of pickles, NWB and HDF5 files and
KiloSort/Phy folders, their reader options, and one Snakemake run converting a folder of
mixed kinds to every format, each output verified against its input as read."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import copy_workflow, run_snakemake

from spikelab.formats.hdf5 import export_spikedata_to_hdf5
from spikelab.formats.pickle_io import load_spikedata_from_pickle
from spikelab.workflow.inputs import InputError, discover_recordings
from spikelab.workflow.summary import read_summary

DATA = Path(__file__).parent / "data"
FS_HZ = 30000.0


# ------------------------------------------------------------------------ foreign inputs
def write_pynwb_tutorial_file(path: Path, *, with_electrodes: bool) -> list[np.ndarray]:
    """An NWB file built the way pynwb's tutorials build a Units table (a ``quality``
    column; electrodes optional); returns the spike times (s) of each unit."""
    from pynwb import NWBHDF5IO, NWBFile

    nwb = NWBFile(
        session_description="tutorial-style units",
        identifier="tutorial-units",
        session_start_time=datetime(2024, 5, 1, 9, 30, tzinfo=UTC),
    )
    if with_electrodes:
        device = nwb.create_device(name="probe")
        group = nwb.create_electrode_group(
            name="shank0", description="shank", location="CA1", device=device
        )
        for i in range(4):
            nwb.add_electrode(group=group, location="CA1", x=float(i), y=20.0 * i, z=0.0)
    nwb.add_unit_column(name="quality", description="sorting quality")
    rng = np.random.default_rng(7)
    trains = [np.sort(rng.uniform(0, 5.0, n)) for n in (12, 0, 30)]
    for i, (t, q) in enumerate(zip(trains, ("good", "noise", "mua"), strict=True)):
        kwargs = {"electrodes": [i]} if with_electrodes else {}
        nwb.add_unit(spike_times=t, quality=q, **kwargs)
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return trains


def write_kilosort_folder(folder: Path) -> dict[int, np.ndarray]:
    """A KiloSort 2.5-style folder: samples in spike_times.npy, clusters from
    spike_templates.npy (no spike_clusters.npy), KSLabel labels; returns samples per cluster."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(3)
    samples = np.sort(rng.integers(0, int(5 * FS_HZ), 200)).astype(np.uint64)
    templates = rng.choice([0, 2, 5], size=samples.size).astype(np.uint32)
    np.save(folder / "spike_times.npy", samples.reshape(-1, 1))
    np.save(folder / "spike_templates.npy", templates)
    np.save(folder / "channel_positions.npy", np.array([[0.0, 0.0], [0.0, 20.0], [0.0, 40.0]]))
    (folder / "params.py").write_text(
        "dat_path = 'recording.dat'\nn_channels_dat = 3\ndtype = 'int16'\noffset = 0\n"
        f"sample_rate = {FS_HZ}\nhp_filtered = False\n"
    )
    (folder / "cluster_KSLabel.tsv").write_text("cluster_id\tKSLabel\n0\tgood\n2\tmua\n5\tgood\n")
    return {c: samples[templates == c] for c in (0, 2, 5)}


# ------------------------------------------------------------------------ discovery
def test_a_directory_finds_every_kind_by_suffix_and_folder_content(tmp_path):
    (tmp_path / "a.pkl").write_bytes((DATA / "small.pkl").read_bytes())
    (tmp_path / "b.nwb").write_bytes(b"x")
    (tmp_path / "c.h5").write_bytes(b"x")
    (tmp_path / "c2.HDF5").write_bytes(b"x")
    write_kilosort_folder(tmp_path / "d")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "not_a_sorting").mkdir()
    (tmp_path / ".hidden.nwb").write_bytes(b"x")
    recs = discover_recordings({"directory": str(tmp_path)})
    assert [(r.name, r.format) for r in recs] == [
        ("a", "pickle"),
        ("b", "nwb"),
        ("c", "hdf5"),
        ("c2", "hdf5"),
        ("d", "kilosort"),
    ]
    phy = recs[-1]
    assert sorted(Path(f).name for f in phy.input_files) == [
        "channel_positions.npy",
        "cluster_KSLabel.tsv",
        "params.py",
        "spike_templates.npy",
        "spike_times.npy",
    ]
    assert phy.size_bytes == sum(Path(f).stat().st_size for f in phy.input_files)


def test_two_inputs_with_one_stem_are_refused_naming_both(tmp_path):
    (tmp_path / "a.pkl").write_bytes(b"x")
    (tmp_path / "a.nwb").write_bytes(b"x")
    with pytest.raises(InputError, match=r"'a' is used by 2 files"):
        discover_recordings({"directory": str(tmp_path)})


def test_a_glob_takes_phy_folders_whole_not_their_files(tmp_path):
    write_kilosort_folder(tmp_path / "sorted" / "s1")
    (tmp_path / "sorted" / "t.nwb").write_bytes(b"x")
    recs = discover_recordings({"glob": str(tmp_path / "sorted" / "**")})
    assert [(r.name, r.format) for r in recs] == [("s1", "kilosort"), ("t", "nwb")]


def test_a_sample_sheet_gives_the_format_and_reader_options_per_row(tmp_path):
    (tmp_path / "x.dat").write_bytes(b"x")
    (tmp_path / "y.h5").write_bytes(b"x")
    write_kilosort_folder(tmp_path / "z")
    (tmp_path / "sheet.tsv").write_text(
        "recording\tpath\tformat\tfs_Hz\tidces_dataset\ttimes_dataset\ttimes_unit\n"
        "x\tx.dat\tnwb\t\t\t\t\n"
        "y\ty.h5\t\t\tix\tt\ts\n"
        "z\tz\t\t20000\t\t\t\n"
    )
    recs = discover_recordings({"sample_sheet": str(tmp_path / "sheet.tsv")})
    assert [(r.name, r.format, r.read_options, r.fs_Hz) for r in recs] == [
        ("x", "nwb", (), None),
        ("y", "hdf5", (("idces_dataset", "ix"), ("times_dataset", "t"), ("times_unit", "s")), None),
        ("z", "kilosort", (), 20000.0),
    ]


def test_a_reader_option_of_another_format_is_refused_naming_the_row(tmp_path):
    (tmp_path / "a.nwb").write_bytes(b"x")
    (tmp_path / "sheet.tsv").write_text("recording\tpath\ttimes_dataset\na\ta.nwb\tt\n")
    with pytest.raises(InputError, match=r"line 2: recording 'a': column\(s\) times_dataset"):
        discover_recordings({"sample_sheet": str(tmp_path / "sheet.tsv")})
    (tmp_path / "sheet.tsv").write_text("recording\tpath\tformat\na\ta.nwb\tzarr\n")
    with pytest.raises(InputError, match=r"format 'zarr' is not one of"):
        discover_recordings({"sample_sheet": str(tmp_path / "sheet.tsv")})


def test_config_read_options_apply_per_format_and_are_checked(tmp_path):
    (tmp_path / "a.h5").write_bytes(b"x")
    (tmp_path / "b.pkl").write_bytes(b"x")
    recs = discover_recordings(
        {"directory": str(tmp_path), "read_options": {"hdf5": {"spike_times_unit": "ms"}}}
    )
    assert [r.read_options for r in recs] == [(("spike_times_unit", "ms"),), ()]
    with pytest.raises(InputError, match=r"read_options.nwb: times_dataset not"):
        discover_recordings(
            {"directory": str(tmp_path), "read_options": {"nwb": {"times_dataset": "t"}}}
        )


# ------------------------------------------------------------------------ the workflow
def _mixed_folder(root: Path) -> dict:
    """A pickle, a pynwb tutorial NWB file, a KiloSort-style folder, one of our HDF5 files,
    a Phy folder from SpikeInterface's export_to_phy and an NWB file from neuroconv, in
    ``root``."""
    from foreign_files import write_nwb_with_neuroconv, write_phy_from_spikeinterface

    root.mkdir()
    phy = write_phy_from_spikeinterface(root)  # root/phy
    neuroconv = write_nwb_with_neuroconv(root)  # root/neuroconv.nwb
    (root / "pickled.pkl").write_bytes((DATA / "small.pkl").read_bytes())
    nwb_trains = write_pynwb_tutorial_file(root / "tutorial.nwb", with_electrodes=True)
    ks = write_kilosort_folder(root / "sorted")
    export_spikedata_to_hdf5(
        load_spikedata_from_pickle(DATA / "neg_start.pkl"), root / "ours.h5", style="ragged"
    )
    return {"nwb": nwb_trains, "kilosort": ks, "phy": phy, "neuroconv": neuroconv}


@pytest.mark.slow
def test_a_folder_of_every_kind_converts_to_every_format_and_verifies(tmp_path):
    wf = copy_workflow(tmp_path / "wf", example=False)
    truth = _mixed_folder(wf / "inputs")
    config = yaml.safe_load((wf / "config.yaml").read_text())
    config["inputs"] = {"directory": "inputs", "glob": None, "sample_sheet": None}
    config["fs_Hz"] = 20000.0  # for KiloSort outputs of inputs that give no rate
    (wf / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    run_snakemake(wf, "--cores", "2", check=True)

    rows = read_summary(wf / "results" / "summary.tsv")
    names = {"pickled", "tutorial", "sorted", "ours", "phy", "neuroconv"}
    assert {r["recording"] for r in rows} == names
    assert len(rows) == len(names) * 5
    assert all(r["status"] == "ok" for r in rows), [r for r in rows if r["status"] != "ok"]
    copied = {(r["recording"], r["target"]) for r in rows if "copied unchanged" in r["message"]}
    assert copied == {("ours", "hdf5/ragged")}
    assert (wf / "results/hdf5/ragged/ours.h5").read_bytes() == (wf / "inputs/ours.h5").read_bytes()

    # Phy -> NWB keeps the KSLabel labels; NWB -> Phy keeps quality; spike times survive.
    from pynwb import NWBHDF5IO

    with NWBHDF5IO(str(wf / "results/nwb/sorted.nwb"), "r") as io:
        units = io.read().units.to_dataframe()
    labels = {c: units[c].tolist() for c in units.columns if c in ("KSLabel", "quality")}
    assert ["good", "mua", "good"] in labels.values(), units.columns.tolist()
    for got, samples in zip(units["spike_times"], truth["kilosort"].values(), strict=True):
        np.testing.assert_allclose(np.asarray(got) * FS_HZ, samples, atol=0.5)
    with NWBHDF5IO(str(wf / "results/nwb/phy.nwb"), "r") as io:
        units = io.read().units.to_dataframe()
    assert units["group"].tolist() == truth["phy"].labels["group"]  # good/mua/noise
    with NWBHDF5IO(str(wf / "results/nwb/neuroconv.nwb"), "r") as io:
        units = io.read().units.to_dataframe()
    assert units["quality"].tolist() == truth["neuroconv"].labels["quality"]
    tsvs = {p.name: p.read_text() for p in (wf / "results/kilosort/tutorial").glob("*.tsv")}
    assert any("noise" in t and "mua" in t for t in tsvs.values()), tsvs
    stats = json.loads(next((wf / "results/report/stats").glob("*.json")).read_text())
    n_spikes = {r["recording"]: r["n_spikes"] for r in stats["recordings"]}
    assert n_spikes["tutorial"] == sum(t.size for t in truth["nwb"])
    assert n_spikes["sorted"] == 200

    # A second run has nothing to do; touching a file of the Phy folder re-runs its batch.
    again = run_snakemake(wf, "-n", check=True)
    assert "Nothing to be done" in again.stdout + again.stderr
    (wf / "inputs/sorted/cluster_KSLabel.tsv").write_text(
        "cluster_id\tKSLabel\n0\tmua\n2\tmua\n5\tgood\n"
    )
    rerun = run_snakemake(wf, "-n", check=True)
    assert "export_nwb__" in rerun.stdout + rerun.stderr


@pytest.mark.slow
def test_a_foreign_hdf5_file_converts_with_its_dataset_names_from_the_sheet(tmp_path):
    import h5py

    wf = copy_workflow(tmp_path / "wf", example=False)
    (wf / "inputs").mkdir()
    times_s = np.array([0.5, 1.25, 0.1, 2.0, 3.5])
    units = np.array([1, 1, 0, 0, 2])
    with h5py.File(wf / "inputs" / "lab.h5", "w") as f:
        f["unit_of_spike"] = units
        f["t_s"] = times_s
    (wf / "inputs" / "sheet.tsv").write_text(
        "recording\tpath\tidces_dataset\ttimes_dataset\ttimes_unit\nlab\tlab.h5\tunit_of_spike"
        "\tt_s\ts\n"
    )
    config = yaml.safe_load((wf / "config.yaml").read_text())
    config["inputs"] = {"directory": None, "glob": None, "sample_sheet": "inputs/sheet.tsv"}
    config["fs_Hz"] = 1000.0
    (wf / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    run_snakemake(wf, "--cores", "2", check=True)
    rows = read_summary(wf / "results" / "summary.tsv")
    assert [r["status"] for r in rows] == ["ok"] * 5
    sd = load_spikedata_from_pickle(wf / "results/pickle/lab.pkl")
    assert [t.tolist() for t in sd.train] == [[100.0, 2000.0], [500.0, 1250.0], [3500.0]]


@pytest.mark.slow
def test_bad_inputs_of_every_kind_get_failure_records_and_the_rest_converts(tmp_path):
    """An NWB file that is not HDF5, an HDF5 file with an external link, and a Phy folder
    whose params.py is code: each fails alone, with a failure record naming it and the fault;
    the pickle beside them converts and verifies; the check names each bad input."""
    import h5py

    wf = copy_workflow(tmp_path / "wf", example=False)
    inputs = wf / "inputs"
    inputs.mkdir()
    (inputs / "good.pkl").write_bytes((DATA / "small.pkl").read_bytes())
    (inputs / "garbage.nwb").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 200)
    secret = tmp_path / "secret.h5"
    with h5py.File(secret, "w") as f:
        f["spike_times"] = np.arange(3.0)
    with h5py.File(inputs / "linked.h5", "w") as f:
        f.attrs["spikelab_style"] = "ragged"
        f["spike_times"] = h5py.ExternalLink(str(secret), "spike_times")
        f["spike_times_index"] = np.array([3])
    phy = inputs / "sorted"
    write_kilosort_folder(phy)
    (phy / "params.py").write_text("import os\nsample_rate = float(os.getpid())\n")
    config = yaml.safe_load((wf / "config.yaml").read_text())
    config["inputs"] = {"directory": "inputs", "glob": None, "sample_sheet": None}
    (wf / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    proc = run_snakemake(wf, "--cores", "2")
    assert proc.returncode != 0
    rows = {(r["recording"], r["target"]): r for r in read_summary(wf / "results/summary.tsv")}
    assert {r["status"] for (name, _), r in rows.items() if name == "good"} == {"ok"}
    faults = {"garbage": "garbage.nwb", "linked": "external link", "sorted": "sample_rate"}
    for name, fault in faults.items():
        for target in ("nwb", "pickle", "hdf5/ragged", "hdf5/raster", "kilosort"):
            row = rows[name, target]
            assert row["status"] == "export_failed", row
            assert fault in row["message"], row["message"]
    check = (wf / "logs" / "check.log").read_text()
    assert all(f"inputs/{f}" in check for f in ("garbage.nwb", "linked.h5", "sorted"))
