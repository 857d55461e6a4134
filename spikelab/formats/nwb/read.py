"""Read SpikeData (times in ms) from an NWB file, through pynwb or plain h5py (same result), or
from SpikeLab's plain HDF5 layout.

Files with SpikeLab's state (``/scratch/spikelab``) come back exactly as written; files of other
writers give start_time/length from ``obs_intervals`` (else the spikes), metadata from the
NWBFile fields and ``fs_Hz`` = 1/resolution, and neuron_attributes from the scalar Units columns.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from spikelab.formats.errors import LoadError, spikedata_or_load_error
from spikelab.formats.files import check_unit_count, loader_boundary
from spikelab.formats.nwb.layout import (
    DEFAULT_GROUP,
    DEFAULT_SPIKE_TIMES_DATASET,
    DEFAULT_SPIKE_TIMES_INDEX_DATASET,
    RESERVED_COLUMNS,
    STATE_NAME,
    Parts,
    as_index,
    check_names,
    parse_state,
)
from spikelab.formats.nwb.plain import read_plain
from spikelab.formats.strict_hdf5 import open_hdf5
from spikelab.spikedata.spikedata import SpikeData

__all__ = ["load_spikedata_from_nwb"]


def _decode(values: Any) -> list:
    out = []
    for v in values:
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        elif isinstance(v, np.generic):
            v = v.item()
        out.append(v)
    return out


def _unit_columns(names: list[str], get, n: int) -> dict[str, list]:
    """Scalar per-unit columns (not NWB-defined, not indexed) as Python lists."""
    out = {}
    for name in names:
        if name in RESERVED_COLUMNS or f"{name}_index" in names or name.endswith("_index"):
            continue
        data = get(name)
        if data is None or getattr(data, "ndim", 1) != 1 or len(data) != n:
            continue
        values = data[:]
        if isinstance(values, np.ndarray) and values.dtype.kind not in "biufOSU":
            continue
        out[name] = _decode(values)
    return out


def _read_nwb_h5py(h5) -> Parts:
    """The parts of an NWB file read with h5py from the checked file ``h5`` (a StrictH5 whose
    whole file was checked: every dataset here is safe to read)."""
    import h5py

    f, source = h5.f, h5.source
    parts = Parts()
    for key in ("identifier", "session_description", "session_start_time"):
        obj = h5.node(key)
        if isinstance(obj, h5py.Dataset):
            parts.file_meta[key] = _decode([h5.read(obj, key, numeric=False)])[0]
    state = h5.node(f"scratch/{STATE_NAME}")
    if isinstance(state, h5py.Dataset):
        parts.state = parse_state(h5.read(state, f"scratch/{STATE_NAME}", numeric=False), source)
    units = h5.node("units")
    if not isinstance(units, h5py.Group):
        return parts
    st, index = h5.node("spike_times", units), h5.node("spike_times_index", units)
    if not isinstance(st, h5py.Dataset) or not isinstance(index, h5py.Dataset):
        raise LoadError(f"{source}: the Units table has no spike_times/spike_times_index")
    parts.times_s = np.asarray(h5.read(st, "units/spike_times"), dtype=np.float64).reshape(-1)
    parts.ends = as_index(h5.read(index, "units/spike_times_index"), source, "spike_times_index")
    check_unit_count(parts.ends.size, source, "the Units table")
    parts.resolution = _resolution(h5.attr(st, "resolution"))
    if parts.state is None:
        n = parts.ends.size
        colnames = h5.attr(units, "colnames")
        colnames = [] if colnames is None else _decode(np.atleast_1d(colnames))
        colnames = [c for c in colnames if isinstance(c, str)]

        def get(name):
            obj = h5.node(name, units)
            return obj if isinstance(obj, h5py.Dataset) else None

        parts.columns = _unit_columns(colnames, get, n)
        names = get("unit_name")
        if names is not None:
            parts.columns["unit_name"] = _decode(np.atleast_1d(names[()]))
        obs = get("obs_intervals")
        if obs is not None:
            parts.obs = _observed(obs[()])
        rows, idx = get("electrodes"), get("electrodes_index")
        if rows is not None and idx is not None:
            table = h5.attr(rows, "table")
            ids = None
            if isinstance(table, h5py.Reference) and table:
                target = f[table]
                column = target.get("id") if isinstance(target, h5py.Group) else None
                ids = np.asarray(column[()]) if isinstance(column, h5py.Dataset) else None
            parts.electrode_ids = _electrode_ids(
                as_index(rows[()], source, "units/electrodes"),
                as_index(idx[()], source, "units/electrodes_index"),
                ids,
            )
    return parts


def _resolution(value: Any) -> float | None:
    """Units.resolution (s) when it is a finite number > 0, else None (unknown)."""
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.number):
        return None
    value = float(value)
    return value if math.isfinite(value) and value > 0 else None


def _observed(values: Any) -> tuple[float, float] | None:
    """(first start, last end) (s) of obs_intervals, or None when there is none."""
    obs = np.asarray(values, dtype=np.float64).reshape(-1)
    if obs.size % 2:
        return None
    obs = obs.reshape(-1, 2)
    if not obs.size:
        return None
    return float(obs[:, 0].min()), float(obs[:, 1].max())


def _electrode_ids(rows: np.ndarray, idx: np.ndarray, ids: np.ndarray | None) -> list | None:
    """One electrode id per unit when every unit has exactly one electrode."""
    if ids is None or idx.size == 0 or np.any(np.diff(idx, prepend=0) != 1):
        return None
    ids = np.asarray(ids).reshape(-1)
    if rows.size and (rows.min() < 0 or rows.max() >= ids.size or ids.dtype.kind not in "iu"):
        return None
    return [int(i) for i in ids[rows]]


def _read_nwb_pynwb(h5) -> Parts:
    """The parts of an NWB file read through pynwb, from the checked file ``h5`` (its whole
    file checked first: pynwb reads every object)."""
    from pynwb import NWBHDF5IO

    source = h5.source
    parts = Parts()
    try:
        with NWBHDF5IO(file=h5.f, mode="r") as io:
            nwb = io.read()
            parts.file_meta = {
                "identifier": nwb.identifier,
                "session_description": nwb.session_description,
                "session_start_time": nwb.session_start_time.isoformat(),
            }
            if STATE_NAME in nwb.scratch:
                parts.state = parse_state(nwb.scratch[STATE_NAME].data, source)
            units = nwb.units
            if units is None:
                return parts
            if "spike_times" not in units.colnames:
                raise LoadError(f"{source}: the Units table has no spike_times column")
            index = units["spike_times"]
            parts.times_s = np.asarray(index.target.data[:], dtype=np.float64)
            parts.ends = as_index(index.data[:], source, "spike_times_index")
            check_unit_count(parts.ends.size, source, "the Units table")
            parts.resolution = _resolution(units.resolution)
            if parts.state is None:
                n = parts.ends.size

                def get(name):
                    return getattr(units[name], "data", None)

                names = list(units.colnames)
                parts.columns = _unit_columns(names, get, n)
                if "unit_name" in names:
                    parts.columns["unit_name"] = _decode(units["unit_name"].data[:])
                if "obs_intervals" in names:
                    parts.obs = _observed(units["obs_intervals"].target.data[:])
                if "electrodes" in names:
                    region = units["electrodes"]
                    rows = as_index(region.target.data[:], source, "units/electrodes")
                    idx = as_index(region.data[:], source, "units/electrodes_index")
                    ids = np.asarray(region.target.table.id.data[:])
                    parts.electrode_ids = _electrode_ids(rows, idx, ids)
    except LoadError:
        raise
    except Exception as exc:  # pynwb/hdmf raise many types for files they cannot map
        first = (str(exc).splitlines() or [""])[0][:300]
        raise LoadError(
            f"{source}: pynwb cannot read this file as NWB ({type(exc).__name__}: {first}); "
            "try prefer_pynwb=False"
        ) from None
    return parts


def _assemble(
    parts: Parts, length_ms: float | None, start_time_ms: float | None, source: str
) -> SpikeData:
    state = parts.state
    ends = parts.ends
    if state is not None:
        n = int(state["N"])
        if ends is None:
            ends = np.zeros(n, dtype=np.int64)
        start = float(state["start_time_ms"])
        length = float(state["length_ms"])
        offset = float(state.get("time_offset_ms", 0.0))
        metadata = state.get("metadata") or {}
        attrs = state.get("neuron_attributes")
    else:
        if ends is None:
            raise LoadError(f"{source}: no Units table (no spike trains) in this NWB file")
        n, offset = ends.size, 0.0
        start, length = parts.start_ms, parts.length_ms
        metadata = dict(parts.file_meta)
        if isinstance(metadata.get("session_start_time"), str):  # same text from both readers
            with contextlib.suppress(ValueError):
                when = _dt.datetime.fromisoformat(metadata["session_start_time"])
                metadata["session_start_time"] = when.isoformat()
        if parts.resolution is not None and parts.resolution > 0:
            metadata["fs_Hz"] = 1.0 / parts.resolution
        attrs = _foreign_attributes(parts, n)
    check_unit_count(n, source, "the Units table")
    if ends.size != n:
        raise LoadError(f"{source}: the spike index has {ends.size} entries for N={n} units")
    if n and (np.any(np.diff(ends, prepend=0) < 0) or ends[-1] != parts.times_s.size):
        raise LoadError(
            f"{source}: corrupt spike index (not cumulative end offsets into "
            f"{parts.times_s.size} spike times)"
        )
    if not n and parts.times_s.size:
        raise LoadError(f"{source}: {parts.times_s.size} spike times but no unit")
    ms = parts.times_s
    ms *= 1000.0
    if offset:
        ms += offset
    if start_time_ms is not None:
        start = start_time_ms
    if start is None:  # other writers: the observed interval (else from 0), widened to the spikes
        start = min(parts.obs[0] * 1000.0 if parts.obs else 0.0, float(ms.min(initial=np.inf)))
    if length is None:
        end = parts.obs[1] * 1000.0 if parts.obs else start
        length = max(end, float(ms.max(initial=start))) - start
    if length_ms is not None:
        length = length_ms
    trains = np.split(ms, ends[:-1]) if n else []
    return spikedata_or_load_error(
        source,
        trains,
        N=n,
        length=length,
        start_time=start,
        neuron_attributes=attrs,
        metadata=metadata,
    )


def _foreign_attributes(parts: Parts, n: int) -> list[dict] | None:
    cols = dict(parts.columns)
    if parts.electrode_ids is not None:
        cols.setdefault("electrode", parts.electrode_ids)
    if not cols or not n:
        return None
    return [{k: v[i] for k, v in cols.items()} for i in range(n)]


def _number_arg(source: str, name: str, value) -> float:
    """A keyword argument in ms as a finite float; LoadError naming it otherwise."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise LoadError(f"{source}: {name} must be a number (ms), got {value!r}") from None
    if not math.isfinite(value):
        raise LoadError(f"{source}: {name} must be finite (ms), got {value!r}")
    return value


def load_spikedata_from_nwb(
    filepath: str | os.PathLike,
    *,
    prefer_pynwb: bool = True,
    length_ms: float | None = None,
    start_time_ms: float | None = None,
    spike_times_dataset: str = DEFAULT_SPIKE_TIMES_DATASET,
    spike_times_index_dataset: str = DEFAULT_SPIKE_TIMES_INDEX_DATASET,
    group: str = DEFAULT_GROUP,
) -> SpikeData:
    """Read SpikeData (times in ms) from an NWB file or SpikeLab's plain HDF5 layout.

    Parameters
    ----------
    filepath : NWB/HDF5 file.
    prefer_pynwb : read NWB files through pynwb (True) or plain h5py (False); same result.
    length_ms : recording length (ms) overriding the stored one.
    start_time_ms : recording start (ms) overriding the stored one (the spike times stay).
    spike_times_dataset, spike_times_index_dataset, group : names of the plain HDF5 layout;
        non-default names read that layout with h5py (spike times in s, cumulative end index).

    Files without SpikeLab's state (other NWB writers) give start_time/length from
    ``obs_intervals`` (else the spikes), metadata from the NWBFile fields and ``fs_Hz`` =
    1/resolution, and neuron_attributes from the scalar Units columns.

    The file is untrusted (see :mod:`~spikelab.formats.strict_hdf5`): only a regular file is
    opened, and before pynwb or h5py reads anything the whole file is checked once (every link,
    object, attribute and object reference; ~15 ms for a SpikeLab NWB file, independent of the
    number of spikes): an external link, external raw storage, a virtual dataset, a reference
    to an unnamed object, or a size the file cannot hold is refused. Any fault of the file is a
    LoadError naming the file (and the field).
    """
    source = os.fspath(filepath)
    if not isinstance(prefer_pynwb, bool):
        raise LoadError(f"{source}: prefer_pynwb must be True or False, got {prefer_pynwb!r}")
    default = check_names(
        spike_times_dataset, spike_times_index_dataset, group, LoadError, str(source)
    )
    if length_ms is not None:
        length_ms = _number_arg(source, "length_ms", length_ms)
        if length_ms < 0:
            raise LoadError(f"{source}: length_ms must be finite and >= 0 ms, got {length_ms!r}")
    if start_time_ms is not None:
        start_time_ms = _number_arg(source, "start_time_ms", start_time_ms)
    path = Path(source)
    if not os.path.exists(path):
        raise LoadError(f"{source}: no such file")
    with loader_boundary(source), contextlib.ExitStack() as stack:
        try:
            h5 = stack.enter_context(
                open_hdf5(path, source, not_hdf5="not an NWB/HDF5 file", what="an NWB file")
            )
        except FileNotFoundError:  # removed meanwhile
            raise LoadError(f"{source}: no such file") from None
        h5.check_whole_file()  # pynwb reads every object: all are checked first
        if default and "nwb_version" in h5.f.attrs:
            parts = (_read_nwb_pynwb if prefer_pynwb else _read_nwb_h5py)(h5)
        else:
            parts = read_plain(h5, group, spike_times_dataset, spike_times_index_dataset)
        return _assemble(parts, length_ms, start_time_ms, source)
