"""Every peer reader opens every NWB file and Phy folder the workflow writes for the example."""

import os

import numpy as np
import pytest
from conftest import copy_workflow, run_snakemake

from spikelab.formats.pickle_io import load_spikedata_from_pickle
from spikelab.workflow.inputs import recordings_from_sample_sheet

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """The example workflow's NWB and KiloSort outputs, built once; (workdir, recordings)."""
    wd = copy_workflow(tmp_path_factory.mktemp("peers") / "wf")
    recs = recordings_from_sample_sheet(wd / "example" / "recordings.tsv")
    targets = [f"results/nwb/{r.name}.nwb" for r in recs]
    targets += [f"results/kilosort/{r.name}" for r in recs]
    run_snakemake(wd, *targets, check=True)
    return wd, recs


def _samples(sd, fs):
    return [np.rint((t - min(sd.start_time, 0.0)) * fs / 1000).astype(np.int64) for t in sd.train]


def test_pynwb_validate_reports_no_errors(example):
    from pynwb import validate

    wd, recs = example
    for r in recs:
        assert validate(path=str(wd / "results" / "nwb" / f"{r.name}.nwb")) == []


@pytest.mark.parametrize("config", ["default", "dandi"])
def test_nwbinspector_finds_nothing_critical_or_violating(example, config):
    from nwbinspector import Importance, inspect_nwbfile, load_config

    wd, recs = example
    cfg = load_config("dandi") if config == "dandi" else None
    for r in recs:
        messages = list(
            inspect_nwbfile(nwbfile_path=str(wd / "results" / "nwb" / f"{r.name}.nwb"), config=cfg)
        )
        serious = [
            (m.importance.name, m.check_function_name, m.message)
            for m in messages
            if m.importance
            in (Importance.CRITICAL, Importance.BEST_PRACTICE_VIOLATION, Importance.ERROR)
        ]
        assert serious == [], r.name


@pytest.mark.parametrize("use_pynwb", [True, False])
def test_spikeinterface_reads_every_nwb_file_with_the_same_trains(example, use_pynwb):
    from spikeinterface.extractors import read_nwb_sorting

    wd, recs = example
    for r in recs:
        sd = load_spikedata_from_pickle(r.path if os.path.isabs(r.path) else wd / r.path)
        sorting = read_nwb_sorting(
            str(wd / "results" / "nwb" / f"{r.name}.nwb"),
            use_pynwb=use_pynwb,
            sampling_frequency=r.fs_Hz,
        )
        fs = sorting.get_sampling_frequency()
        assert fs == r.fs_Hz
        assert sorting.get_num_units() == sd.N
        for uid, expected in zip(sorting.get_unit_ids(), _samples(sd, fs), strict=True):
            got = sorting.get_unit_spike_train(uid)
            np.testing.assert_allclose(got, expected, atol=1)


@pytest.mark.parametrize("reader", ["read_phy", "read_kilosort"])
def test_spikeinterface_reads_every_phy_folder_with_the_same_trains(example, reader):
    import spikeinterface.extractors as se

    wd, recs = example
    for r in recs:
        sd = load_spikedata_from_pickle(wd / r.path if not os.path.isabs(r.path) else r.path)
        folder = wd / "results" / "kilosort" / r.name
        kwargs = {"remove_empty_units": False} if reader == "read_kilosort" else {}
        sorting = getattr(se, reader)(folder, **kwargs)
        assert sorting.get_sampling_frequency() == r.fs_Hz
        assert sorting.get_num_units() == sd.N
        for uid, expected in zip(sorting.get_unit_ids(), _samples(sd, r.fs_Hz), strict=True):
            np.testing.assert_array_equal(sorting.get_unit_spike_train(uid), expected)


def test_phylib_opens_every_phy_folder(example):
    from phylib.io.model import load_model

    wd, recs = example
    for r in recs:
        sd = load_spikedata_from_pickle(wd / r.path if not os.path.isabs(r.path) else r.path)
        model = load_model(wd / "results" / "kilosort" / r.name / "params.py")
        try:
            assert model.sample_rate == r.fs_Hz
            assert model.spike_times.size == sd.n_spikes
            assert np.all(np.diff(model.spike_samples) >= 0)
        finally:
            model.close()
