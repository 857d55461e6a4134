"""Recordings without a spike: zero units (a sorting that found nothing) and units that never
fired. The NWB file has an (empty) Units table that every reader opens.

nwbinspector 0.7.2 (the installed one) reports such a table, and crashes in three of its checks
on an empty ``spike_times`` column (it reads element 0 of every column; NeurodataWithoutBorders/
nwbinspector#712 and #728, fixed upstream for zero-row tables by #729). A crash is reported as an
ERROR "During evaluation of '<check>'": a fault of the inspector, not of the file, and it cannot
be avoided without a spike. The tests pin exactly these messages, so that a release which stops
crashing makes them fail (then update README "Differences"/NWB and KNOWN_INSPECTOR_CRASHES).
"""

from __future__ import annotations

import re
import warnings

import h5py
import numpy as np
import pytest

from spikelab.formats.nwb import export_spikedata_to_nwb, load_spikedata_from_nwb
from spikelab.spikedata import SpikeData

SUBJECT = {"subject_id": "org-01", "species": "Homo sapiens", "sex": "U", "age": "P60D"}
START = "2024-05-01T10:00:00+02:00"

CASES = {
    "zero_units": SpikeData([], length=100.0, metadata={"fs_Hz": 30000.0, "sorter": "ks4"}),
    "zero_units_no_rate_neg_start": SpikeData([], start_time=-50.0, length=100.0),
    "all_units_empty": SpikeData(
        [[], [], []],
        length=250.0,
        neuron_attributes=[{"cluster_id": 4}, {"cluster_id": 8}, {"cluster_id": 15}],
        metadata={"fs_Hz": 20000.0, "nested": {"a": [1, 2]}},
    ),
    "all_units_empty_with_electrodes": SpikeData(
        [[], []],
        start_time=-20.0,
        length=40.0,
        neuron_attributes=[
            {"electrode": 5, "location": [10.0, 20.0]},
            {"electrode": 2, "location": [0.0, 5.0]},
        ],
        metadata={"fs_Hz": 30000.0},
    ),
}

#: nwbinspector 0.7.2 checks that crash on an empty spike_times column: on a zero-row table,
#: and (the last one) on rows none of which holds a spike.
KNOWN_INSPECTOR_CRASHES = {
    "zero_rows": {"check_col_not_nan", "check_table_values_for_dict"},
    "rows_without_spikes": {
        "check_col_not_nan",
        "check_table_values_for_dict",
        "check_units_table_duration",
    },
}


def export(sd: SpikeData, path, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        export_spikedata_to_nwb(sd, path, session_start_time=START, **kwargs)
    return path


@pytest.mark.parametrize("case", sorted(CASES))
def test_units_table_is_written_empty_and_pynwb_reads_it(tmp_path, case):
    from pynwb import NWBHDF5IO, validate

    sd = CASES[case]
    path = export(sd, tmp_path / f"{case}.nwb")
    assert validate(path=str(path)) == []
    with h5py.File(path, "r") as f:  # what SpikeLab 0.1.2's own tests look for
        assert f["units/spike_times"].shape == (0,)
        np.testing.assert_array_equal(f["units/spike_times_index"][()], np.zeros(sd.N))
        np.testing.assert_array_equal(f["units/id"][()], np.arange(sd.N))
        assert (f.attrs["start_time"], f.attrs["length_ms"]) == (
            max(sd.start_time, 0.0),
            sd.length,
        )
    with NWBHDF5IO(str(path), "r") as io:
        units = io.read().units
        assert len(units) == sd.N
        assert len(units.to_dataframe()) == sd.N
        for i in range(sd.N):
            assert len(units["spike_times"][i]) == 0


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("prefer_pynwb", [True, False])
def test_our_loader_round_trips_n_start_length_metadata_attributes(tmp_path, case, prefer_pynwb):
    sd = CASES[case]
    got = load_spikedata_from_nwb(export(sd, tmp_path / f"{case}.nwb"), prefer_pynwb=prefer_pynwb)
    assert got.N == sd.N
    assert (got.start_time, got.length) == (sd.start_time, sd.length)
    assert got.metadata == sd.metadata
    assert got.neuron_attributes == sd.neuron_attributes
    assert [t.size for t in got.train] == [0] * sd.N


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("use_pynwb", [True, False])
def test_spikeinterface_opens_it_with_both_backends(tmp_path, case, use_pynwb):
    from spikeinterface.extractors import read_nwb_sorting

    sd = CASES[case]
    path = export(sd, tmp_path / f"{case}.nwb")
    fs = sd.metadata.get("fs_Hz")
    kwargs = {} if fs else {"sampling_frequency": 30000.0}  # else Units.resolution gives it
    sorting = read_nwb_sorting(str(path), use_pynwb=use_pynwb, **kwargs)
    assert sorting.get_num_units() == sd.N
    assert sorting.get_sampling_frequency() == pytest.approx(fs or 30000.0)
    for unit_id in sorting.get_unit_ids():
        assert sorting.get_unit_spike_train(unit_id).size == 0


def _inspector_findings(path, config):
    from nwbinspector import inspect_nwbfile, load_config

    cfg = load_config("dandi") if config == "dandi" else None
    found = {"crashes": set(), "serious": set(), "violations": set()}
    for m in inspect_nwbfile(nwbfile_path=path, config=cfg):
        name = m.importance.name
        if name == "ERROR":
            crashed = re.match(r"During evaluation of '(\w+)'", m.check_function_name)
            found["crashes" if crashed else "serious"].add(
                crashed.group(1) if crashed else m.check_function_name
            )
        elif name in ("CRITICAL", "PYNWB_VALIDATION"):
            found["serious"].add(m.check_function_name)
        elif name == "BEST_PRACTICE_VIOLATION":
            found["violations"].add(m.check_function_name)
    return found


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("config", ["default", "dandi"])
def test_nwbinspector_finds_nothing_critical_only_the_empty_table_and_its_own_crashes(
    tmp_path, case, config
):
    sd = CASES[case]
    path = export(sd, tmp_path / f"{case}.nwb", fs_Hz=30000.0, **SUBJECT)
    found = _inspector_findings(path, config)
    assert found["serious"] == set()  # no CRITICAL, no validation error, no other error
    if sd.N == 0:
        assert found["violations"] == {"check_empty_table"}  # a zero-row table, truly
        assert found["crashes"] == KNOWN_INSPECTOR_CRASHES["zero_rows"]
    else:
        assert found["violations"] == set()
        assert found["crashes"] == KNOWN_INSPECTOR_CRASHES["rows_without_spikes"]


def test_one_spike_is_enough_for_the_inspector_to_stop_crashing(tmp_path):
    sd = SpikeData([[], [12.5], []], length=250.0, metadata={"fs_Hz": 20000.0})
    path = export(sd, tmp_path / "one_spike.nwb", **SUBJECT)
    for config in ("default", "dandi"):
        found = _inspector_findings(path, config)
        assert found == {"crashes": set(), "serious": set(), "violations": set()}
