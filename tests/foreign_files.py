"""Files written by other tools, for the loaders' tests: each ``write_*`` function writes one
into a given folder and returns a :class:`Written` (what the writer was given), so that a test
compares what our loader reads with what went in.

- :func:`write_phy_from_spikeinterface`: ``spikeinterface.exporters.export_to_phy`` of a
  ground-truth recording, then labelled the way Phy saves a curation (``cluster_group.tsv``).
- :func:`write_kilosort2_folder`: a folder as KiloSort 2/2.5's ``rezToPhy`` leaves it
  (``spike_times.npy`` uint64 samples, ``spike_templates.npy``, no ``spike_clusters.npy``,
  ``cluster_KSLabel.tsv``, ``params.py``, templates, channel map and positions).
- :func:`write_nwb_with_neuroconv`: the ground-truth sorting through neuroconv's
  ``write_sorting_to_nwbfile`` (SpikeInterface's NWB writing path).
- :func:`write_nwb_with_pynwb`: a Units table built as pynwb's tutorials build one
  (``add_unit_column("quality")``, ``add_unit(spike_times=..., quality=...)``), with or without
  an electrodes table (device, electrode group, x/y/z, rel_x/rel_y, location).
- :func:`write_hdf5_with_spikelab_0_1_2`: the four HDF5 styles written by SpikeLab 0.1.2's own
  exporter, in its own virtual environment (see :mod:`spikelab_reference`).

Everything is made offline and small (4 channels, 5 units, 5 s at 20 kHz).
"""

from __future__ import annotations

import datetime as _dt
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FS = 20000.0  # Hz
DURATION_S = 5.0
N_CHANNELS = 4
N_UNITS = 5
SEED = 7
#: The curation labels given to the five units (Phy's three groups).
LABELS = ["good", "mua", "noise", "good", "mua"]


@dataclass
class Written:
    """What a foreign writer was given: the path, unit ids (in the order of the file's units),
    spike trains (in samples when ``in_samples``, else ms), the rate (Hz), labels, each unit's
    electrode and location (um) where the file holds them, and extra per-unit columns."""

    path: Path
    unit_ids: list
    trains: list[np.ndarray]
    fs_Hz: float | None = FS
    in_samples: bool = True
    labels: dict[str, list[str]] = field(default_factory=dict)
    electrodes: list[int] | None = None
    locations: list[list[float]] | None = None
    columns: dict[str, list] = field(default_factory=dict)

    def trains_ms(self) -> list[np.ndarray]:
        if self.in_samples:
            return [np.asarray(t, dtype=np.float64) * (1000.0 / self.fs_Hz) for t in self.trains]
        return [np.asarray(t, dtype=np.float64) for t in self.trains]


def ground_truth():
    """A small ground-truth recording and sorting (unit ids "0".."4"), made offline."""
    import spikeinterface.core as sc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sc.generate_ground_truth_recording(
            durations=[DURATION_S],
            sampling_frequency=FS,
            num_channels=N_CHANNELS,
            num_units=N_UNITS,
            seed=SEED,
        )


def _trains(sorting) -> list[np.ndarray]:
    return [np.asarray(sorting.get_unit_spike_train(u), dtype=np.int64) for u in sorting.unit_ids]


def write_phy_from_spikeinterface(folder: Path) -> Written:
    """``export_to_phy`` of the ground truth (``quality`` property set, so SpikeInterface
    writes ``cluster_quality.tsv``), then ``cluster_group.tsv`` rewritten as Phy saves it after
    a curation (good/mua/noise)."""
    import spikeinterface.core as sc
    from spikeinterface.exporters import export_to_phy

    recording, sorting = ground_truth()
    sorting.set_property("quality", np.array(LABELS))
    analyzer = sc.create_sorting_analyzer(sorting, recording, sparse=False, format="memory")
    analyzer.compute(["random_spikes", "templates"], verbose=False)
    folder = Path(folder) / "phy"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_to_phy(
            analyzer,
            folder,
            compute_pc_features=False,
            compute_amplitudes=False,
            copy_binary=False,
            remove_if_exists=True,
            verbose=False,
            additional_properties=["quality"],
            n_jobs=1,
        )
    rows = "".join(f"{i}\t{g}\n" for i, g in enumerate(LABELS))
    (folder / "cluster_group.tsv").write_text("cluster_id\tgroup\n" + rows)  # Phy's own form
    extremum = analyzer.get_main_channels(outputs="index", with_dict=True)
    peak = [int(extremum[u]) for u in sorting.unit_ids]
    positions = recording.get_channel_locations()
    return Written(
        path=folder,
        unit_ids=list(range(N_UNITS)),
        trains=_trains(sorting),
        labels={"group": LABELS, "quality": LABELS},
        electrodes=peak,  # channel_map is 0..3: channel index = electrode
        locations=[positions[c].tolist() for c in peak],
    )


#: KiloSort 2's params.py (rezToPhy: the binary's file name, a sample rate with a trailing dot).
KILOSORT2_PARAMS = """dat_path = 'rec1.bin'
n_channels_dat = {n}
dtype = 'int16'
offset = 0
sample_rate = {fs:.0f}.
hp_filtered = False
"""


def write_kilosort2_folder(folder: Path) -> Written:
    """A KiloSort 2/2.5 output folder (rezToPhy), from the ground-truth trains: six templates
    (template 5 kept no spike, as KiloSort leaves some), spikes sorted in time, no
    spike_clusters.npy (Phy makes it on the first save), cluster_KSLabel.tsv (good/mua),
    cluster_ContamPct.tsv and cluster_Amplitude.tsv, params.py, channel_map (the probe's
    channels 1..4: channel 0 was bad), channel_positions, and templates with each unit's peak
    channel, in Fortran order as npy-matlab writes arrays."""
    _, sorting = ground_truth()
    trains = _trains(sorting) + [np.zeros(0, dtype=np.int64)]
    n_templates = len(trains)
    folder = Path(folder) / "kilosort2"
    folder.mkdir(parents=True)
    times = np.concatenate(trains)
    templates_of_spike = np.repeat(np.arange(n_templates), [t.size for t in trains])
    order = np.argsort(times, kind="stable")
    col = (-1, 1)  # MATLAB writes column vectors
    np.save(folder / "spike_times.npy", times[order].astype(np.uint64).reshape(col))
    spike_templates = templates_of_spike[order].astype(np.uint32)
    np.save(folder / "spike_templates.npy", spike_templates.reshape(col))
    np.save(folder / "amplitudes.npy", np.full((times.size, 1), 20.0))
    chan_map = np.arange(1, N_CHANNELS + 1, dtype=np.int32)
    positions = np.c_[np.tile([16.0, 48.0], N_CHANNELS // 2), 20.0 * np.arange(N_CHANNELS)]
    np.save(folder / "channel_map.npy", chan_map.reshape(col))
    np.save(folder / "channel_positions.npy", positions)
    peak = [3, 0, 2, 1, 3, 0]
    templates = np.zeros((n_templates, 61, N_CHANNELS), dtype=np.float32)
    for t, c in enumerate(peak):
        templates[t, 20:40, :] = -0.1 * np.hanning(20)[:, None]
        templates[t, 20:40, c] = -1.0 * np.hanning(20)
    np.save(folder / "templates.npy", np.asfortranarray(templates))
    ind = np.tile(np.arange(N_CHANNELS, dtype=np.float64), (n_templates, 1))
    np.save(folder / "templates_ind.npy", ind)
    (folder / "params.py").write_text(KILOSORT2_PARAMS.format(n=N_CHANNELS + 1, fs=FS))
    ks = ["good", "mua", "mua", "good", "good", "mua"]
    contam = [1.5, 25.0, 40.0, 0.0, 3.25, 100.0]

    def table(name: str, values: list) -> None:
        text = "".join(f"{i}\t{v}\n" for i, v in enumerate(values))
        (folder / f"cluster_{name}.tsv").write_text(f"cluster_id\t{name}\n{text}")

    table("KSLabel", ks)
    table("ContamPct", contam)
    table("Amplitude", [20.0] * n_templates)
    return Written(
        path=folder,
        unit_ids=list(range(n_templates)),
        trains=trains,
        labels={"KSLabel": ks},
        electrodes=[int(chan_map[c]) for c in peak],
        locations=[positions[c].tolist() for c in peak],
        columns={"ContamPct": contam},
    )


def write_nwb_with_neuroconv(folder: Path) -> Written:
    """The ground-truth sorting (``quality`` property) through neuroconv's
    ``write_sorting_to_nwbfile``: unit_name holds SpikeInterface's unit ids, quality a column."""
    from neuroconv.tools.spikeinterface import write_sorting_to_nwbfile

    _, sorting = ground_truth()
    sorting.set_property("quality", np.array(LABELS))
    path = Path(folder) / "neuroconv.nwb"
    metadata = {
        "NWBFile": {
            "session_description": "ground truth through neuroconv",
            "identifier": "neuroconv-fixture",
            "session_start_time": _dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=_dt.UTC),
        }
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_sorting_to_nwbfile(sorting, nwbfile_path=path, metadata=metadata, overwrite=True)
    return Written(
        path=path,
        unit_ids=[str(u) for u in sorting.unit_ids],
        trains=_trains(sorting),
        labels={"quality": LABELS},
    )


def write_nwb_with_pynwb(folder: Path, *, electrodes: bool) -> Written:
    """A Units table as pynwb's tutorials build it: ``add_unit_column("quality", ...)`` and
    ``add_unit(spike_times=..., quality=..., id=...)`` (times in s), ids 10, 11, ...; with
    ``electrodes`` a device, an electrode group, electrodes with x/y/z (brain coordinates),
    rel_x/rel_y (probe, um) and location, and ``add_unit(electrodes=[row])``."""
    from pynwb import NWBHDF5IO, NWBFile

    rng = np.random.default_rng(3)
    trains_s = [np.sort(np.round(rng.uniform(0, DURATION_S, 20 + 7 * u), 6)) for u in range(4)]
    nwbfile = NWBFile(
        session_description="units built as in the pynwb tutorial",
        identifier="pynwb-fixture-" + ("ecephys" if electrodes else "units"),
        session_start_time=_dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=_dt.UTC),
    )
    rows = [2, 0, 3, 1]
    rel = [[0.0, 0.0], [0.0, 25.0], [20.0, 0.0], [20.0, 25.0]]
    if electrodes:
        device = nwbfile.create_device(name="array", description="a 2x2 test array")
        group = nwbfile.create_electrode_group(
            name="shank0", description="shank 0", location="CA1", device=device
        )
        for i, (x, y) in enumerate(rel):
            nwbfile.add_electrode(
                group=group, location="CA1", x=1.0 + i, y=2.0, z=3.0, rel_x=x, rel_y=y
            )
    nwbfile.add_unit_column(name="quality", description="sorting quality")
    nwbfile.add_unit_column(name="snr", description="signal to noise ratio")
    quality = ["good", "mua", "noise", "good"]
    snr = [8.5, 3.0, 1.25, 12.0]
    for u, times in enumerate(trains_s):
        kwargs: dict[str, Any] = {"electrodes": [rows[u]]} if electrodes else {}
        nwbfile.add_unit(spike_times=times, quality=quality[u], snr=snr[u], id=10 + u, **kwargs)
    path = Path(folder) / f"pynwb_{'electrodes' if electrodes else 'units'}.nwb"
    with NWBHDF5IO(path, "w") as io:
        io.write(nwbfile)
    return Written(
        path=path,
        unit_ids=[10 + u for u in range(4)],
        trains=[t * 1000.0 for t in trains_s],
        fs_Hz=None,
        in_samples=False,
        labels={"quality": quality},
        electrodes=rows if electrodes else None,
        locations=[rel[r] for r in rows] if electrodes else None,
        columns={"snr": snr},
    )


#: The HDF5 styles SpikeLab 0.1.2's exporter writes, with the names and units passed to it.
SPIKELAB_HDF5 = {
    "ragged": {"style": "ragged", "spike_times_dataset": "st", "spike_times_index_dataset": "sti",
               "spike_times_unit": "s"},
    "raster": {"style": "raster", "raster_dataset": "raster", "raster_bin_size_ms": 1.0},
    "group": {"style": "group", "group_per_unit": "units", "group_time_unit": "ms"},
    "paired": {"style": "paired", "idces_dataset": "idces", "times_dataset": "times",
               "times_unit": "s"},
}  # fmt: skip

_WRITE_HDF5_WITH_SPIKELAB_0_1_2 = """
import json, sys
import numpy as np
from spikelab.spikedata import SpikeData
from spikelab.data_loaders.data_exporters import export_spikedata_to_hdf5

folder, styles, trains = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
sd = SpikeData([np.asarray(t, dtype=float) for t in trains], length=1000.0 * float(sys.argv[4]))
for name, options in styles.items():
    export_spikedata_to_hdf5(sd, f"{folder}/{name}.h5", **options)
print(json.dumps(sorted(styles)))
"""


def write_hdf5_with_spikelab_0_1_2(folder: Path) -> dict[str, Written]:
    """The ground-truth trains (ms) written by SpikeLab 0.1.2's ``export_spikedata_to_hdf5``
    in each of :data:`SPIKELAB_HDF5`, in its own virtual environment (fetched from the
    package index once; see :mod:`spikelab_reference`). Returns one Written per style."""
    from spikelab_reference import reference_json

    _, sorting = ground_truth()
    trains_ms = [t * (1000.0 / FS) for t in _trains(sorting)]
    folder = Path(folder)
    reference_json(
        _WRITE_HDF5_WITH_SPIKELAB_0_1_2,
        str(folder),
        json.dumps(SPIKELAB_HDF5),
        json.dumps([t.tolist() for t in trains_ms]),
        str(DURATION_S),
    )
    return {
        name: Written(
            path=folder / f"{name}.h5",
            unit_ids=list(range(N_UNITS)),
            trains=trains_ms,
            fs_Hz=None,
            in_samples=False,
        )
        for name in SPIKELAB_HDF5
    }
