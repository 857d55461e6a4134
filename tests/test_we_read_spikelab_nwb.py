"""The other way round: the NWB files SpikeLab 0.1.2's exporter writes (its own layout with
the default names, no NWB schema) read with our loader give what SpikeLab 0.1.2's loader
gives: N, the trains, start_time and length (root attributes), each unit's electrode and
location (``units/electrodes`` ids and the electrodes table's x/y/z)."""

from __future__ import annotations

import numpy as np
import pytest
from spikelab_reference import reference_json

from spikelab.formats.nwb import load_spikedata_from_nwb

pytestmark = pytest.mark.slow

WRITE_AND_READ_WITH_SPIKELAB_0_1_2 = """
import json, sys, warnings
import numpy as np
from spikelab.spikedata import SpikeData
from spikelab.data_loaders.data_exporters import export_spikedata_to_nwb
from spikelab.data_loaders.data_loaders import load_spikedata_from_nwb

folder = sys.argv[1]
cases = {
    "event_centred_with_electrodes": SpikeData(
        [np.array([-50.0, 0.0, 50.0]), np.array([]), np.array([10.0, 99.5])],
        start_time=-100.0,
        length=500.0,
        neuron_attributes=[
            {"electrode": 4, "location": [1.0, 2.0]},
            {"electrode": 7, "location": [3.0, 4.0]},
            {"electrode": 4, "location": [1.0, 2.0]},
        ],
    ),
    "three_d_locations": SpikeData(
        [np.array([5.0]), np.array([10.0, 12.0])],
        length=20.0,
        neuron_attributes=[
            {"electrode": 0, "x": 1.0, "y": 2.0, "z": 3.0},
            {"electrode": 1, "x": 4.0, "y": 5.0, "z": 6.0},
        ],
    ),
    "electrodes_without_locations": SpikeData(
        [np.array([1.0]), np.array([2.0])], length=3.0,
        neuron_attributes=[{"electrode": 12}, {"electrode": 3}],
    ),
    "locations_without_electrodes": SpikeData(
        [np.array([5.0, 10.0]), np.array([15.0])], length=20.0,
        neuron_attributes=[{"x": 100.0, "y": 200.0}, {"x": 300.0, "y": 400.0}],
    ),
    "trailing_silence": SpikeData([np.array([1.0, 5.0, 10.0])], length=500.0),
    "zero_units": SpikeData([], length=0.0),
    "all_units_empty": SpikeData([np.array([]), np.array([])], length=100.0),
}
out = {}
for name, sd in cases.items():
    path = f"{folder}/{name}.nwb"
    export_spikedata_to_nwb(sd, path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = load_spikedata_from_nwb(path, prefer_pynwb=False)
    out[name] = {
        "path": path,
        "N": got.N,
        "train": [t.tolist() for t in got.train],
        "start_time": got.start_time,
        "length": got.length,
        "attributes": [
            {k: a[k] for k in ("electrode", "location") if k in a}
            for a in (got.neuron_attributes or [])
        ],
    }
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def theirs(tmp_path_factory) -> dict[str, dict]:
    """Files written by SpikeLab 0.1.2 and what its own loader reads from them."""
    folder = tmp_path_factory.mktemp("theirs")
    return reference_json(WRITE_AND_READ_WITH_SPIKELAB_0_1_2, str(folder))


CASES = [
    "event_centred_with_electrodes",
    "three_d_locations",
    "electrodes_without_locations",
    "locations_without_electrodes",
    "trailing_silence",
    "zero_units",
    "all_units_empty",
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("prefer_pynwb", [True, False])
def test_we_read_what_spikelab_0_1_2_reads_from_its_own_nwb_files(theirs, case, prefer_pynwb):
    expected = theirs[case]
    got = load_spikedata_from_nwb(expected["path"], prefer_pynwb=prefer_pynwb)
    assert got.N == expected["N"]
    assert (got.start_time, got.length) == (expected["start_time"], expected["length"])
    for unit, (a, b) in enumerate(zip(got.train, expected["train"], strict=True)):
        np.testing.assert_array_equal(a, np.asarray(b, dtype=np.float64), err_msg=f"unit {unit}")
    attrs = [
        {k: a[k] for k in ("electrode", "location") if k in a} for a in got.neuron_attributes or []
    ]
    if any(expected["attributes"]):
        assert attrs == expected["attributes"]
    else:  # its loader gives every unit a unit_id and nothing else; ours no attributes
        assert not any(attrs)
