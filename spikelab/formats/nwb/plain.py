"""SpikeLab's plain HDF5 layout for spike trains (not NWB), which ``export_spikedata_to_nwb``
writes when it is given non-default dataset or group names, as SpikeLab 0.1.2 does.

A group ``group`` holds a float64 spike-times dataset (s, unshifted, unit-major), an int64
dataset of cumulative end offsets (one per unit), and the attributes ``start_time`` (ms),
``length_ms`` (ms) and ``spikelab`` (the JSON state of :mod:`~spikelab.formats.nwb.layout`).
pynwb, nwbinspector, DANDI and SpikeInterface do not read it; for a portable file use NWB's
default names, or the HDF5 ``ragged`` style.

The reader also takes the files SpikeLab 0.1.2's NWB exporter writes (this layout with the
default names, no NWB schema): ``start_time`` and ``length_ms`` on the root, electrode ids in
``units/electrodes`` and their ``x``/``y``/``z`` in ``general/extracellular_ephys/electrodes``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from spikelab.formats.errors import LoadError
from spikelab.formats.files import check_unit_count
from spikelab.formats.nwb.layout import STATE_NAME, Parts, as_index, parse_state
from spikelab.formats.streaming import write_hdf5_times

__all__ = ["write_plain", "read_plain"]


def write_plain(
    path: Path, group: str, ds: str, ids: str, trains, ends, sd, state, compression
) -> None:
    import h5py

    with h5py.File(path, "w") as f:
        g = f.require_group(group.strip("/"))
        n = int(ends[-1]) if ends.size else 0
        times = g.create_dataset(ds, shape=(n,), dtype=np.float64, compression=compression)
        write_hdf5_times(times, trains, "s")
        g.create_dataset(ids, data=ends, dtype=np.int64)
        g.attrs["start_time"] = float(sd.start_time)
        g.attrs["length_ms"] = float(sd.length)
        g.attrs[STATE_NAME] = json.dumps(state)


def read_plain(h5, group: str, ds: str, ids: str) -> Parts:
    """The parts of SpikeLab's plain layout in the checked file ``h5`` (a StrictH5)."""
    import h5py

    source = h5.source
    parts = Parts()
    g = h5.node(group.strip("/"))
    if not isinstance(g, h5py.Group):
        raise LoadError(f"{source}: no group {group!r} (the spike trains) in this HDF5 file")
    for name in (ds, ids):
        if not isinstance(h5.node(name, g), h5py.Dataset):
            raise LoadError(f"{source}: group {group!r} has no dataset {name!r}")
    label = group.strip("/")
    times = h5.read(h5.node(ds, g), f"{label}/{ds}")
    parts.times_s = np.asarray(times, dtype=np.float64).reshape(-1)
    ends = h5.read(h5.node(ids, g), f"{label}/{ids}")
    parts.ends = as_index(ends, source, f"{label}/{ids}")
    check_unit_count(parts.ends.size, source, f"{label}/{ids}")
    state = h5.text_attr(g, STATE_NAME)
    if state is not None:
        parts.state = parse_state(state, source)
    parts.start_ms = h5.number_attr(g, "start_time", unit="ms")
    parts.length_ms = h5.number_attr(g, "length_ms", unit="ms")
    if parts.state is None:  # SpikeLab 0.1.2's NWB exporter: on the root, and its electrodes
        if parts.start_ms is None:
            parts.start_ms = h5.number_attr(h5.f, "start_time", unit="ms")
        if parts.length_ms is None:
            parts.length_ms = h5.number_attr(h5.f, "length_ms", unit="ms")
        _read_electrodes(h5, g, label, parts)
    return parts


def _read_electrodes(h5, g, label: str, parts: Parts) -> None:
    """Each unit's electrode and location as SpikeLab 0.1.2's NWB exporter writes them (and its
    loader reads them): electrode ids in ``<group>/electrodes`` (one per unit), positions in
    ``general/extracellular_ephys/electrodes`` (``id`` and whichever of ``x``, ``y``, ``z`` it
    holds). Anything else (several electrodes per unit, an id without a position) is left out."""
    import h5py

    source, n = h5.source, parts.ends.size
    ids, index = h5.node("electrodes", g), h5.node("electrodes_index", g)
    if not (n and isinstance(ids, h5py.Dataset) and isinstance(index, h5py.Dataset)):
        return
    ids = as_index(h5.read(ids, f"{label}/electrodes"), source, f"{label}/electrodes")
    index = as_index(h5.read(index, f"{label}/electrodes_index"), source, "electrodes_index")
    if index.size != n or ids.size != n or np.any(np.diff(index, prepend=0) != 1):
        return
    parts.electrode_ids = [int(i) for i in ids]
    table = h5.node("general/extracellular_ephys/electrodes")
    if not isinstance(table, h5py.Group) or not isinstance(h5.node("id", table), h5py.Dataset):
        return
    where = "general/extracellular_ephys/electrodes"
    table_ids = as_index(h5.read(h5.node("id", table), f"{where}/id"), source, f"{where}/id")
    axes = []
    for axis in ("x", "y", "z"):
        column = h5.node(axis, table)
        if isinstance(column, h5py.Dataset):
            values = np.asarray(h5.read(column, f"{where}/{axis}"), dtype=np.float64).ravel()
            if values.size == table_ids.size:
                axes.append(values)
    if not axes:
        return
    positions = {int(i): [float(a[row]) for a in axes] for row, i in enumerate(table_ids)}
    if all(i in positions for i in parts.electrode_ids):
        parts.columns["location"] = [positions[i] for i in parts.electrode_ids]
