"""The NWB loader's two paths (pynwb and plain h5py, ``prefer_pynwb``) read exactly the same
SpikeData, field by field and type by type, from our files and from files pynwb made alone.

Real files on disk; the h5py path is what verification may use instead of pynwb.
"""

from __future__ import annotations

import math
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from spikelab.formats.errors import LoadError
from spikelab.formats.nwb import export_spikedata_to_nwb, load_spikedata_from_nwb
from spikelab.spikedata import SpikeData
from tests.spikedata_factories import FIXTURES, fixture


def tagged(value):
    """``value`` with the type of every part spelled out, so that 1 and 1.0, a tuple and a
    list, float32 and float64 times, or two NaNs compare as what they are."""
    if isinstance(value, dict):
        return ("dict", [(tagged(k), tagged(v)) for k, v in value.items()])
    if isinstance(value, list | tuple):
        return (type(value).__name__, [tagged(v) for v in value])
    if isinstance(value, np.ndarray):
        return ("ndarray", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, float) and math.isnan(value):
        return ("float", "nan")
    return (type(value).__name__, value)


def read_both(path: Path) -> tuple[SpikeData, SpikeData]:
    return (
        load_spikedata_from_nwb(path, prefer_pynwb=True),
        load_spikedata_from_nwb(path, prefer_pynwb=False),
    )


def assert_readers_agree(path: Path) -> SpikeData:
    via_pynwb, via_h5py = read_both(path)
    a, b = via_pynwb.__getstate__(), via_h5py.__getstate__()
    assert sorted(a) == sorted(b)
    for field in ("N", "start_time", "length", "train", "neuron_attributes", "metadata"):
        assert field in a
    for field in a:
        assert tagged(a[field]) == tagged(b[field]), field
    return via_pynwb


# ------------------------------------------------------------------------------ our files
def _ours() -> dict[str, SpikeData]:
    rng = np.random.default_rng(11)
    cases = {f"fixture_{name}": fixture(name) for name in FIXTURES}
    cases.update(
        {
            "zero_units": SpikeData([], length=100.0, metadata={"fs_Hz": 30000.0}),
            "all_units_empty": SpikeData(
                [[], []], length=10.0, neuron_attributes=[{"cluster_id": 3}, {"cluster_id": 9}]
            ),
            "negative_start": SpikeData(
                [[-250.0, -1e-9, 0.0, 749.5], [-0.1]], start_time=-250.0, length=1000.0
            ),
            "electrodes_and_columns": SpikeData(
                [np.sort(rng.uniform(0, 500.0, rng.integers(0, 30))) for _ in range(6)],
                length=500.0,
                metadata={"fs_Hz": 20000.0, "probe": {"pitch_um": 20.0, "shanks": [1, 2]}},
                neuron_attributes=[
                    {
                        "electrode": 3 * i,
                        "location": [10.0 * i, 5.0, -1.0],
                        "cluster_id": 40 + i,
                        "quality": "good" if i % 2 else "mua",
                        "snr": float("nan") if i == 2 else 0.5 * i,
                        "is_curated": bool(i % 2),
                        "template": [0.1, -0.2],
                        "note": None,
                    }
                    for i in range(6)
                ],
            ),
            "sparse_electrode_ids": SpikeData(
                [[1.0], [2.0], [3.0]],
                length=5.0,
                neuron_attributes=[{"electrode": e} for e in (26399, 9000, 26399)],
            ),
        }
    )
    return cases


OURS = _ours()


@pytest.mark.parametrize("case", sorted(OURS))
@pytest.mark.parametrize("compression", [None, "gzip"])
def test_h5py_path_reads_exactly_what_pynwb_reads_from_our_files(tmp_path, case, compression):
    path = tmp_path / f"{case}.nwb"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_spikedata_to_nwb(OURS[case], path, compression=compression)
    got = assert_readers_agree(path)
    assert got.N == OURS[case].N


# --------------------------------------------------------------- files pynwb made alone
def _write_foreign(path: Path, *, electrodes: bool, obs: bool, resolution: bool, n_units: int):
    """A file written by pynwb alone (no SpikeLab state): extra columns of each scalar type, a
    2-D column both readers skip, electrodes with ids that are not row numbers."""
    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.misc import Units

    nwb = NWBFile(
        session_description="written by pynwb alone",
        identifier=f"foreign-{path.stem}",
        session_start_time=datetime(2022, 2, 2, 9, 30, tzinfo=UTC),
        lab="elsewhere",
    )
    if electrodes:
        device = nwb.create_device(name="probe")
        group = nwb.create_electrode_group(
            name="shank0", description="shank", location="CA1", device=device
        )
        for eid in (10, 20, 30, 40):
            nwb.add_electrode(id=eid, group=group, location="CA1")
    nwb.units = Units(
        name="units",
        resolution=1 / 30000.0 if resolution else -1.0,
        electrode_table=nwb.electrodes if electrodes else None,
    )
    for name, description in (
        ("quality", "curation label"),
        ("snr", "signal to noise"),
        ("is_good", "curated good"),
        ("channel", "peak channel"),
    ):
        nwb.units.add_column(name, description)
    for i in range(n_units):
        kwargs = {
            "spike_times": [0.5 + i, 1.25 + i, 2.0 + 2 * i],
            "quality": "good" if i % 2 else "mua",
            "snr": 1.5 * i,
            "is_good": bool(i % 2),
            "channel": 7 * i,
            "waveform_mean": np.full((3, 2), float(i)),
        }
        if obs:
            kwargs["obs_intervals"] = [[0.0, 10.0]]
        if electrodes:
            kwargs["electrodes"] = [(3 * i) % 4]
        nwb.units.add_unit(**kwargs)
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return path


FOREIGN = {
    "plain": {"electrodes": False, "obs": True, "resolution": True, "n_units": 3},
    "with_electrodes": {"electrodes": True, "obs": True, "resolution": True, "n_units": 5},
    "electrodes_no_obs_no_resolution": {
        "electrodes": True,
        "obs": False,
        "resolution": False,
        "n_units": 2,
    },
    "no_obs_no_resolution": {"electrodes": False, "obs": False, "resolution": False, "n_units": 4},
}


@pytest.mark.parametrize("case", sorted(FOREIGN))
def test_h5py_path_reads_exactly_what_pynwb_reads_from_files_pynwb_made(tmp_path, case):
    options = FOREIGN[case]
    path = _write_foreign(tmp_path / f"{case}.nwb", **options)
    got = assert_readers_agree(path)
    assert got.N == options["n_units"]
    attrs = got.neuron_attributes
    assert [a["quality"] for a in attrs] == ["mua", "good", "mua", "good", "mua"][: got.N]
    assert all("waveform_mean" not in a for a in attrs)
    if options["electrodes"]:
        ids = (10, 20, 30, 40)  # unit i is on row (3 i) % 4
        assert [a["electrode"] for a in attrs] == [ids[(3 * i) % 4] for i in range(got.N)]
    else:
        assert all("electrode" not in a for a in attrs)
    assert ("fs_Hz" in got.metadata) == options["resolution"]
    assert got.metadata["identifier"] == f"foreign-{case}"
    # without obs_intervals: from 0 to the last spike (2 + 2 (N - 1) s)
    assert (got.start_time, got.length) == (0.0, 10000.0 if options["obs"] else 2000.0 * got.N)


def test_a_unit_on_two_electrodes_gives_no_electrode_attribute_on_either_path(tmp_path):
    from pynwb import NWBHDF5IO, NWBFile

    nwb = NWBFile(
        session_description="two electrodes per unit",
        identifier="foreign-two",
        session_start_time=datetime(2022, 2, 2, tzinfo=UTC),
    )
    device = nwb.create_device(name="probe")
    group = nwb.create_electrode_group(
        name="shank0", description="shank", location="CA1", device=device
    )
    for _ in range(3):
        nwb.add_electrode(group=group, location="CA1")
    nwb.add_unit(spike_times=[0.1, 0.2], electrodes=[0, 1])
    nwb.add_unit(spike_times=[0.3], electrodes=[2])
    path = tmp_path / "two.nwb"
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    got = assert_readers_agree(path)
    assert got.neuron_attributes is None or all("electrode" not in a for a in got.neuron_attributes)


def test_a_pynwb_file_without_units_is_the_same_load_error_on_both_paths(tmp_path):
    from pynwb import NWBHDF5IO, NWBFile

    nwb = NWBFile(
        session_description="no units",
        identifier="foreign-none",
        session_start_time=datetime(2022, 2, 2, tzinfo=UTC),
    )
    path = tmp_path / "none.nwb"
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    messages = []
    for prefer_pynwb in (True, False):
        with pytest.raises(LoadError) as err:
            load_spikedata_from_nwb(path, prefer_pynwb=prefer_pynwb)
        messages.append(str(err.value))
    assert messages[0] == messages[1]
    assert "no Units table" in messages[0]
