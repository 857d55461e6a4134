"""Read SpikeData (times in ms) from an NWB file, through pynwb or plain h5py (same result), or
from SpikeLab's plain HDF5 layout.

Files with SpikeLab's state (``/scratch/spikelab``) come back exactly as written; files of other
writers (neuroconv, pynwb) give start_time/length from ``obs_intervals`` (else the spikes),
metadata from the NWBFile fields and ``fs_Hz`` = 1/resolution, and neuron_attributes from the
Units columns, the Units ids and each unit's electrode (see :func:`_foreign_attributes`).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from spikelab.formats.atomic import WrittenFile
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
    """Per-unit columns that NWB does not define, as Python lists: a scalar per unit, a list
    per unit for a 2-D column or a column with one index (``<name>_index``, the values of
    unit i ending at ``index[i]``). ``get(name)`` gives the column's data and its index (or
    None); columns of other shapes, of compound or reference types, or with a second index
    are left out."""
    out = {}
    for name in names:
        if name in RESERVED_COLUMNS or name.endswith("_index"):
            continue
        data, index = get(name)
        if data is None or index is False:
            continue
        values = data[:]
        if not isinstance(values, np.ndarray):
            values = np.asarray(values)
        if values.dtype.kind not in "biufOSU":
            continue
        if index is not None:
            ends = np.asarray(index[:]).reshape(-1)
            if (
                values.ndim != 1
                or ends.size != n
                or ends.dtype.kind not in "iu"
                or np.any(np.diff(ends, prepend=0) < 0)
                or (n and ends[-1] != values.size)
            ):
                continue
            flat = _decode(values)
            starts = np.r_[0, ends[:-1]].tolist() if n else []
            out[name] = [flat[a:b] for a, b in zip(starts, ends.tolist(), strict=True)]
        elif values.ndim == 1 and len(values) == n:
            out[name] = _decode(values)
        elif values.ndim == 2 and len(values) == n:
            out[name] = [_decode(row) for row in values]
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

        def dataset(name, group=units):
            obj = h5.node(name, group)
            return obj if isinstance(obj, h5py.Dataset) else None

        def get(name):
            index = dataset(f"{name}_index")
            if index is not None and dataset(f"{name}_index_index") is not None:
                return dataset(name), False
            return dataset(name), index

        parts.columns = _unit_columns(colnames, get, n)
        names = dataset("unit_name")
        if names is not None:
            parts.columns["unit_name"] = _decode(np.atleast_1d(names[()]))
        unit_ids = dataset("id")
        if unit_ids is not None:
            parts.unit_ids = np.asarray(unit_ids[()]).reshape(-1)
        obs = dataset("obs_intervals")
        if obs is not None:
            parts.obs = _observed(obs[()])
        rows, idx = dataset("electrodes"), dataset("electrodes_index")
        if rows is not None and idx is not None:
            table = h5.attr(rows, "table")
            columns: dict[str, np.ndarray] = {}
            if isinstance(table, h5py.Reference) and table:
                target = f[table]
                if isinstance(target, h5py.Group):
                    for key in ELECTRODE_COLUMNS:
                        column = dataset(key, target)
                        if column is not None:
                            columns[key] = np.asarray(column[()])
            parts.electrodes = _electrodes(
                as_index(rows[()], source, "units/electrodes"),
                as_index(idx[()], source, "units/electrodes_index"),
                columns,
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


#: Columns of the electrodes table a reader takes: the row ids, the probe coordinates (um),
#: the brain coordinates and the location's name.
ELECTRODE_COLUMNS = ("id", "rel_x", "rel_y", "rel_z", "x", "y", "z", "location")


def _electrodes(rows: np.ndarray, idx: np.ndarray, columns: dict[str, Any]) -> dict[str, list]:
    """When every unit has exactly one electrode: each unit's ``electrode`` (the electrodes
    table's id of its row), ``location`` (rel_x, rel_y[, rel_z], um, the probe coordinates;
    without them x, y[, z], as SpikeLab 0.1.2 reads them) and ``electrode_location`` (the
    row's location name). Otherwise nothing."""
    ids = columns.get("id")
    if ids is None or idx.size == 0 or np.any(np.diff(idx, prepend=0) != 1):
        return {}
    ids = np.asarray(ids).reshape(-1)
    if rows.size != idx.size or ids.dtype.kind not in "iu":
        return {}
    if rows.size and (rows.min() < 0 or rows.max() >= ids.size):
        return {}
    out: dict[str, list] = {"electrode": [int(i) for i in ids[rows]]}
    for axes in (("rel_x", "rel_y", "rel_z"), ("x", "y", "z")):
        found = [np.asarray(columns[a]).reshape(-1) for a in axes if a in columns]
        if len(found) < 2 or axes[0] not in columns or axes[1] not in columns:
            continue
        if any(c.size != ids.size or c.dtype.kind not in "iuf" for c in found):
            continue
        coords = np.stack([c[rows] for c in found], axis=1).astype(np.float64)
        if np.all(np.isfinite(coords)):
            out["location"] = coords.tolist()
            break
    names = columns.get("location")
    if names is not None:
        names = np.asarray(names).reshape(-1)
        if names.size == ids.size and names.dtype.kind in "OSU":
            out["electrode_location"] = _decode(names[rows])
    return out


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

                from hdmf.common import VectorIndex

                def get(name):
                    column = units[name]
                    if isinstance(column, VectorIndex):
                        if isinstance(column.target, VectorIndex):
                            return None, False
                        return getattr(column.target, "data", None), column.data
                    return getattr(column, "data", None), None

                names = list(units.colnames)
                parts.columns = _unit_columns(names, get, n)
                if "unit_name" in names:
                    parts.columns["unit_name"] = _decode(units["unit_name"].data[:])
                parts.unit_ids = np.asarray(units.id.data[:]).reshape(-1)
                if "obs_intervals" in names:
                    parts.obs = _observed(units["obs_intervals"].target.data[:])
                if "electrodes" in names:
                    region = units["electrodes"]
                    rows = as_index(region.target.data[:], source, "units/electrodes")
                    idx = as_index(region.data[:], source, "units/electrodes_index")
                    table = region.target.table
                    columns = {"id": np.asarray(table.id.data[:])}
                    for key in ELECTRODE_COLUMNS[1:]:
                        if key in table.colnames:
                            columns[key] = np.asarray(table[key].data[:])
                    parts.electrodes = _electrodes(rows, idx, columns)
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
    """Each unit's attributes: the Units columns, its id in the Units table (``unit_id``,
    when the ids are not pynwb's default 0..N-1) and its electrode (see :func:`_electrodes`)."""
    cols = dict(parts.columns)
    ids = parts.unit_ids
    if ids is not None and ids.size == n and ids.dtype.kind in "iu":
        if not np.array_equal(ids, np.arange(n)):
            cols.setdefault("unit_id", [int(i) for i in ids])
    for key, values in parts.electrodes.items():
        cols.setdefault(key, values)
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
    own_output: WrittenFile | None = None,
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
    own_output : for the caller that has just written ``filepath`` itself in this process (the
        workflow's read-back of its own output): the identity its writer recorded
        (:func:`spikelab.formats.atomic.written_file`). When the file opened is exactly that
        file, unchanged, the whole-file check below is skipped (the datasets read are still
        checked one by one); otherwise, and by default, the file gets the full check.

    Files without SpikeLab's state (other NWB writers) give start_time/length from
    ``obs_intervals`` (else the spikes), metadata from the NWBFile fields and ``fs_Hz`` =
    1/resolution, and neuron_attributes from the Units columns (a column with an index, or of
    two dimensions, as a list per unit), the Units ids (``unit_id``, unless 0..N-1) and, for
    a unit on one electrode, its ``electrode`` id, ``location`` (rel_x/rel_y/rel_z in um,
    else x/y/z) and ``electrode_location``.

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
    if own_output is not None and not isinstance(own_output, WrittenFile):
        raise LoadError(
            f"{source}: own_output must be a WrittenFile (spikelab.formats.atomic.written_file) "
            f"or None, got {type(own_output).__name__}"
        )
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
        if not h5.is_written(own_output):  # a file of ours as written needs no scan
            h5.check_whole_file()  # pynwb reads every object: all are checked first
        if default and "nwb_version" in h5.f.attrs:
            parts = (_read_nwb_pynwb if prefer_pynwb else _read_nwb_h5py)(h5)
        else:
            parts = read_plain(h5, group, spike_times_dataset, spike_times_index_dataset)
        return _assemble(parts, length_ms, start_time_ms, source)
