"""NWB export and import of SpikeData (times in ms in memory, in s in the file).

With the default dataset and group names the exporter writes a schema-valid NWB 2.x file with
pynwb:

- ``/units``: a Units table with one row per unit (ids ``0..N-1``): ``spike_times`` (s, ascending
  per unit), ``obs_intervals`` (``[[start, end]]`` of the recording, s), a string ``unit_name``
  (the ``cluster_id`` attribute when every unit has a distinct one, else the unit index), one
  column per scalar neuron attribute, ``electrodes`` (a row index into ``/general/extracellular_
  ephys/electrodes``, one row per distinct electrode, probe coordinates in ``rel_x``/``rel_y``/
  ``rel_z``, um) when every unit has an electrode, and ``resolution`` = 1/fs (s) when the
  sampling rate is known. The table is left out when the recording has no spike at all
  (nwbinspector flags empty Units tables); N is still kept (see below).
- ``/scratch/spikelab``: a JSON text holding what NWB has no field for, read back by the loader:
  ``N``, ``start_time_ms``, ``length_ms``, ``time_offset_ms``, ``fs_Hz``, ``metadata`` and the full
  ``neuron_attributes`` (both passed through ``json_safe``: tuples and arrays come back as lists).

NWB times must not be negative, so when ``start_time`` < 0 every time is shifted:
``t_nwb [s] = (t_ms - time_offset_ms) / 1000`` with ``time_offset_ms = min(start_time, 0)``, and
``timestamps_reference_time`` is set ``time_offset_ms`` before ``session_start_time``.

With any non-default name the exporter writes SpikeLab's plain HDF5 layout instead (not NWB): a
group ``group`` holding a float64 spike-times dataset (s, unshifted), an int64 index dataset of
cumulative end offsets (length N), and the attributes ``start_time`` (ms), ``length_ms`` (ms)
and ``spikelab`` (the same JSON text).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import math
import os
import re
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spikelab.data_loaders._common import (
    ExportError,
    LoadError,
    OutputInTheWayError,
    atomic_file,
    check_fs,
    json_safe,
    spikedata_or_load_error,
    write_hdf5_times,
)
from spikelab.spikedata.spikedata import SpikeData

__all__ = ["export_spikedata_to_nwb", "load_spikedata_from_nwb"]

DEFAULT_SPIKE_TIMES_DATASET = "spike_times"
DEFAULT_SPIKE_TIMES_INDEX_DATASET = "spike_times_index"
DEFAULT_GROUP = "units"
DEFAULT_SESSION_DESCRIPTION = "Spike trains exported from SpikeLab"
#: Used when neither the ``session_start_time`` keyword nor ``metadata["session_start_time"]``
#: gives one (nwbinspector then suggests setting the true date).
DEFAULT_SESSION_START_TIME = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
STATE_NAME = "spikelab"  # /scratch/spikelab in NWB, attribute of the group in plain HDF5
STATE_VERSION = 1

_COMPRESSIONS = (None, "gzip", "lzf")
_ID_NAMESPACE = uuid.UUID("edfb8484-f02b-4bd4-bda1-352519cf2822")
# Units columns defined by the NWB schema (and their indexes) and the attributes of the Units
# group: never used as names of attribute columns.
_RESERVED_COLUMNS = {
    "id",
    "description",
    "colnames",
    "object_id",
    "namespace",
    "neurodata_type",
    "spike_times",
    "spike_times_index",
    "obs_intervals",
    "obs_intervals_index",
    "electrodes",
    "electrodes_index",
    "electrode_group",
    "waveform_mean",
    "waveform_sd",
    "waveforms",
    "waveforms_index",
    "waveforms_index_index",
    "unit_name",
}
# ISO 8601 duration (nwbinspector's pattern), optionally a range "P1D/P3D" or "P90D/".
_DURATION = (
    r"P(?!$)(\d+(?:\.\d+)?Y)?(\d+(?:\.\d+)?M)?(\d+(?:\.\d+)?W)?(\d+(?:\.\d+)?D)?"
    r"(T(?=\d)(\d+(?:\.\d+)?H)?(\d+(?:\.\d+)?M)?(\d+(?:\.\d+)?S)?)?"
)
_AGE = re.compile(rf"{_DURATION}|{_DURATION}/(?:{_DURATION})?|/{_DURATION}")


# --------------------------------------------------------------------------- argument checks
def _check_names(
    spike_times_dataset: Any, spike_times_index_dataset: Any, group: Any, error: type, where: str
) -> bool:
    """Validate the dataset/group names; return True when they are the NWB defaults."""
    for what, name in (
        ("spike_times_dataset", spike_times_dataset),
        ("spike_times_index_dataset", spike_times_index_dataset),
    ):
        if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
            raise error(f"{where}: {what} must be a dataset name without '/', got {name!r}")
    if spike_times_dataset == spike_times_index_dataset:
        raise error(
            f"{where}: spike_times_dataset and spike_times_index_dataset must differ, both are "
            f"{spike_times_dataset!r}"
        )
    if not isinstance(group, str) or not group.strip("/") or "//" in group:
        raise error(f"{where}: group must be an HDF5 group path such as 'units', got {group!r}")
    return (
        spike_times_dataset == DEFAULT_SPIKE_TIMES_DATASET
        and spike_times_index_dataset == DEFAULT_SPIKE_TIMES_INDEX_DATASET
        and group.strip("/") == DEFAULT_GROUP
    )


def _opt_str(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ExportError(f"{name} must be a non-empty string or None, got {value!r}")
    return value


def _as_datetime(value: Any, source: str) -> _dt.datetime:
    """A timezone-aware datetime from a datetime or an ISO 8601 string."""
    if isinstance(value, str):
        try:
            value = _dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise ExportError(
                f"{source} must be an ISO 8601 date-time such as '2024-05-01T10:00:00+00:00', "
                f"got {value!r}"
            ) from None
    if not isinstance(value, _dt.datetime):
        raise ExportError(f"{source} must be a datetime or an ISO 8601 string, got {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ExportError(
            f"{source} ({value.isoformat()}) has no time zone; NWB needs one. Give an offset, "
            "e.g. '2024-05-01T10:00:00+00:00', or pass session_start_time= with one."
        )
    return value


def _resolve_fs(sd: SpikeData, fs_Hz: Any) -> float | None:
    if fs_Hz is not None:
        return check_fs(fs_Hz)
    value = sd.metadata.get("fs_Hz")
    return None if value is None else check_fs(value, what='metadata["fs_Hz"]')


def _nwb_options(sd: SpikeData, kw: dict[str, Any]) -> dict[str, Any]:
    """Validate the NWBFile keywords; return what NWBFile and Subject are built from."""
    identifier = _opt_str("identifier", kw["identifier"])
    description = _opt_str("session_description", kw["session_description"])
    if description is None:
        meta_desc = sd.metadata.get("session_description")
        description = meta_desc if isinstance(meta_desc, str) and meta_desc.strip() else None
    if kw["session_start_time"] is not None:
        start = _as_datetime(kw["session_start_time"], "session_start_time")
    elif sd.metadata.get("session_start_time") is not None:
        start = _as_datetime(sd.metadata["session_start_time"], 'metadata["session_start_time"]')
    else:
        start = DEFAULT_SESSION_START_TIME
    experimenter = kw["experimenter"]
    if isinstance(experimenter, str):
        experimenter = [experimenter]
    if experimenter is not None:
        if not isinstance(experimenter, Sequence) or not all(
            isinstance(e, str) and e.strip() for e in experimenter
        ):
            raise ExportError(
                f"experimenter must be a name or a list of names, got {kw['experimenter']!r}"
            )
        experimenter = list(experimenter) or None
    meta_subject = sd.metadata.get("subject")
    if meta_subject is not None and not isinstance(meta_subject, dict):
        raise ExportError(f'metadata["subject"] must be a dict, got {type(meta_subject).__name__}')
    subject = {}
    for key in ("subject_id", "species", "sex", "age"):
        if kw[key] is not None:
            subject[key] = _opt_str(key, kw[key])
        elif meta_subject and meta_subject.get(key) is not None:
            subject[key] = _opt_str(f'metadata["subject"]["{key}"]', meta_subject[key])
    if "age" in subject and not _AGE.fullmatch(subject["age"]):
        raise ExportError(
            f"age must be an ISO 8601 duration such as 'P90D' (90 days) or a range 'P90D/P120D', "
            f"got {subject['age']!r}"
        )
    location = _opt_str("electrode_location", kw["electrode_location"]) or "unknown"
    return {
        "identifier": identifier,
        "session_description": description or DEFAULT_SESSION_DESCRIPTION,
        "session_start_time": start,
        "lab": _opt_str("lab", kw["lab"]),
        "institution": _opt_str("institution", kw["institution"]),
        "experimenter": experimenter,
        "subject": subject or None,
        "electrode_location": location,
    }


# ------------------------------------------------------------------------------ spike arrays
def _checked_trains(sd: SpikeData) -> tuple[list[np.ndarray], np.ndarray]:
    """The spike trains (float64 ms, each ascending) and the cumulative per-unit ends.

    Checked unit by unit, without a full-size copy: a unit changed out of order after
    construction is replaced by a sorted copy; a non-finite time or one outside the recording
    raises ExportError (the first non-finite time in unit order; else the lowest time below
    the start, else the highest above the end, in the first unit holding it).
    """
    trains = [_as_float_train(t) for t in sd.train]
    ends = np.cumsum(np.fromiter((t.size for t in trains), dtype=np.int64, count=len(trains)))
    for unit, t in enumerate(trains):
        if t.size > 1 and not (t[1:] >= t[:-1]).all():  # a NaN anywhere fails this too
            _check_finite(unit, t)
            trains[unit] = np.sort(t)
        elif t.size and not (math.isfinite(t[0]) and math.isfinite(t[-1])):
            _check_finite(unit, t)  # ascending: finite when both ends are
    full = [u for u, t in enumerate(trains) if t.size]
    if full:
        firsts = np.array([trains[u][0] for u in full])
        lasts = np.array([trains[u][-1] for u in full])
        lo_ms, hi_ms = float(sd.start_time), float(sd.start_time) + float(sd.length)
        tmin, tmax = float(firsts.min()), float(lasts.max())
        if tmin < lo_ms or tmax > hi_ms:
            bad, ends_of = (tmin, firsts) if tmin < lo_ms else (tmax, lasts)
            unit = full[int(np.flatnonzero(ends_of == bad)[0])]
            raise ExportError(
                f"unit {unit}: spike time {bad} ms lies outside the recording "
                f"[{lo_ms}, {hi_ms}] ms; fix start_time/length before exporting"
            )
    return trains, ends


def _as_float_train(train: Any) -> np.ndarray:
    flat = np.ravel(train)
    return flat if flat.dtype == np.float64 else flat.astype(np.float64, casting="same_kind")


def _check_finite(unit: int, t: np.ndarray) -> None:
    bad = np.flatnonzero(~np.isfinite(t))
    if bad.size:
        raise ExportError(f"unit {unit}: spike time {t[bad[0]]} is not finite")


def _scalar(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    return value if isinstance(value, bool | int | float | str) else None


def _attribute_columns(attrs: list[dict] | None, n: int) -> dict[str, np.ndarray]:
    """Scalar attributes (bool, int, float or str) that every unit has, one array per key."""
    if not attrs or n == 0:
        return {}
    out: dict[str, np.ndarray] = {}
    for key in attrs[0]:
        if not isinstance(key, str) or key in _RESERVED_COLUMNS or "/" in key or not key:
            continue
        values = [_scalar(a.get(key)) for a in attrs]
        if any(v is None for v in values):
            continue
        kinds = {
            str if isinstance(v, str) else bool if isinstance(v, bool) else float for v in values
        }
        if len(kinds) != 1:
            continue
        if kinds == {str}:
            out[key] = np.array(values, dtype=object)
        elif kinds == {bool}:
            out[key] = np.array(values, dtype=bool)
        elif all(isinstance(v, int) for v in values) and all(abs(v) < 2**63 for v in values):
            out[key] = np.array(values, dtype=np.int64)
        else:
            out[key] = np.array(values, dtype=np.float64)
    return out


def _unit_names(attrs: list[dict] | None, n: int) -> np.ndarray:
    ids = [a.get("cluster_id") for a in attrs] if attrs else None
    if ids is not None and all(_scalar(i) is not None for i in ids):
        names = [str(_scalar(i)) for i in ids]
        if len(set(names)) == n:
            return np.array(names, dtype=object)
    return np.array([str(i) for i in range(n)], dtype=object)


def _state(sd: SpikeData, fs: float | None, offset_ms: float) -> dict[str, Any]:
    return {
        "format": "spikelab",
        "version": STATE_VERSION,
        "N": int(sd.N),
        "start_time_ms": float(sd.start_time),
        "length_ms": float(sd.length),
        "time_offset_ms": offset_ms,
        "fs_Hz": fs,
        "metadata": json_safe(sd.metadata),
        "neuron_attributes": None
        if sd.neuron_attributes is None
        else json_safe(list(sd.neuron_attributes)),
    }


def _stable_identifier(stem: str, trains: list[np.ndarray], ends: np.ndarray, text: str) -> str:
    """uuid5 of a SHA-256 of the file stem, the spike counts, a per-unit checksum of the spike
    times (wrapping sum of their 64-bit patterns: one pass, any changed spike changes it) and
    ``text`` (state and options)."""
    h = hashlib.sha256()
    h.update(stem.encode())
    h.update(np.ascontiguousarray(ends, dtype="<i8").tobytes())
    sums = [np.add.reduce(np.ascontiguousarray(t, "<f8").view("<u8")) for t in trains if t.size]
    if sums:
        h.update(np.array(sums, dtype="<u8").tobytes())
    h.update(text.encode())
    return str(uuid.uuid5(_ID_NAMESPACE, h.hexdigest()))


# ---------------------------------------------------------------------------------- writers
@contextlib.contextmanager
def _write_errors(target: str):
    """Turn h5py/HDF5 write failures (disk full, quota...) into one OSError naming the file."""
    try:
        yield
    except (OSError, RuntimeError) as exc:
        first = (str(exc).splitlines() or [""])[0][:300]
        raise OSError(
            f"{target}: writing failed ({type(exc).__name__}: {first}); "
            "an existing file at this path is unchanged"
        ) from exc


def _write_plain(
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


def _build_nwbfile(sd, opts, state_text, ends, fs, offset_ms, compression):
    """The NWBFile and the H5DataIO of its spike times (None without a Units table): an empty
    dataset of known shape that the caller fills after ``io.write``, block by block."""
    from hdmf.backends.hdf5 import H5DataIO
    from hdmf.common import DynamicTableRegion, VectorData, VectorIndex
    from pynwb import NWBFile
    from pynwb.ecephys import ElectrodesTable
    from pynwb.file import Subject
    from pynwb.misc import Units

    start = opts["session_start_time"]
    nwbfile = NWBFile(
        session_description=opts["session_description"],
        identifier=opts["identifier"],
        session_start_time=start,
        timestamps_reference_time=start + _dt.timedelta(milliseconds=offset_ms),
        lab=opts["lab"],
        institution=opts["institution"],
        experimenter=opts["experimenter"],
        subject=None if opts["subject"] is None else Subject(**opts["subject"]),
    )
    nwbfile.add_scratch(
        state_text,
        name=STATE_NAME,
        description=(
            "SpikeLab round-trip state (JSON): N, start_time_ms, length_ms, time_offset_ms "
            "(NWB time 0 is this SpikeLab time, ms), fs_Hz, metadata, neuron_attributes"
        ),
    )
    n = sd.N
    if not ends.size or not ends[-1]:
        return nwbfile, None  # no spike at all: no Units table (N is in the JSON state)

    unit_rows = np.arange(n, dtype=np.int64)
    one_per_unit = np.arange(1, n + 1, dtype=np.int64)
    times_io = H5DataIO(shape=(int(ends[-1]),), dtype=np.float64, compression=compression)
    spike_times = VectorData(
        name="spike_times",
        description="the spike times for each unit in seconds",
        data=times_io,
    )
    lo_s = (float(sd.start_time) - offset_ms) / 1000.0
    hi_s = (float(sd.start_time) + float(sd.length) - offset_ms) / 1000.0
    obs = VectorData(
        name="obs_intervals",
        description="the observation intervals for each unit (the whole recording), in seconds",
        data=np.tile(np.array([[lo_s, hi_s]], dtype=np.float64), (n, 1)),
    )
    columns = [
        spike_times,
        VectorIndex(name="spike_times_index", data=ends, target=spike_times),
        obs,
        VectorIndex(name="obs_intervals_index", data=one_per_unit, target=obs),
        VectorData(
            name="unit_name",
            description="unit name: the cluster_id attribute, else the SpikeLab unit index",
            data=_unit_names(sd.neuron_attributes, n),
        ),
    ]
    electrodes = sd.electrodes
    if electrodes is not None:
        device = nwbfile.create_device(
            name="device", description="recording device (not described in the SpikeData)"
        )
        egroup = nwbfile.create_electrode_group(
            name="electrode_group",
            description="all electrodes of the recording",
            location=opts["electrode_location"],
            device=device,
        )
        elec_ids, first, rows = np.unique(electrodes, return_index=True, return_inverse=True)
        m = elec_ids.size
        ecols = [
            VectorData(
                name="location",
                description="Location of the electrode (channel).",
                data=np.array([opts["electrode_location"]] * m, dtype=object),
            ),
            VectorData(
                name="group",
                description="Reference to the ElectrodeGroup.",
                data=[egroup] * m,
            ),
            VectorData(
                name="group_name",
                description="Name of the ElectrodeGroup.",
                data=np.array([egroup.name] * m, dtype=object),
            ),
        ]
        locations = sd.unit_locations
        if locations is not None and 1 <= locations.shape[1] <= 3:
            for axis, name in enumerate(("rel_x", "rel_y", "rel_z")[: locations.shape[1]]):
                ecols.append(
                    VectorData(
                        name=name,
                        description=f"{name[-1]} coordinate in electrode group, um "
                        "(location of the first unit on this electrode)",
                        data=locations[first, axis].astype(np.float32),
                    )
                )
        table = ElectrodesTable(id=elec_ids.astype(np.int64), columns=ecols)
        nwbfile.electrodes = table
        region = DynamicTableRegion(
            name="electrodes",
            description="row of the electrodes table each unit was recorded on",
            data=rows.astype(np.int64).reshape(-1),
            table=table,
        )
        columns += [region, VectorIndex(name="electrodes_index", data=one_per_unit, target=region)]
    for key, values in _attribute_columns(sd.neuron_attributes, n).items():
        columns.append(
            VectorData(name=key, description=f"SpikeLab neuron attribute {key!r}", data=values)
        )
    shift = "" if not offset_ms else f"; NWB time 0 is SpikeLab time {offset_ms!r} ms"
    nwbfile.units = Units(
        name="units",
        description=f"Spike-sorted units exported from SpikeLab{shift}",
        id=unit_rows,
        columns=columns,
        resolution=None if fs is None else 1.0 / fs,
        electrode_table=nwbfile.electrodes,
    )
    return nwbfile, times_io


def export_spikedata_to_nwb(
    sd: SpikeData,
    filepath: str | os.PathLike,
    *,
    spike_times_dataset: str = DEFAULT_SPIKE_TIMES_DATASET,
    spike_times_index_dataset: str = DEFAULT_SPIKE_TIMES_INDEX_DATASET,
    group: str = DEFAULT_GROUP,
    fs_Hz: float | None = None,
    identifier: str | None = None,
    session_description: str | None = None,
    session_start_time: _dt.datetime | str | None = None,
    subject_id: str | None = None,
    species: str | None = None,
    sex: str | None = None,
    age: str | None = None,
    lab: str | None = None,
    institution: str | None = None,
    experimenter: str | Sequence[str] | None = None,
    electrode_location: str = "unknown",
    compression: str | None = None,
) -> None:
    """Write ``sd`` (times in ms) to an NWB file (spike times in s); see the module docstring.

    Parameters
    ----------
    sd : SpikeData
    filepath : path of the file to write (replaced atomically, only on success).
    spike_times_dataset, spike_times_index_dataset, group : any non-default name writes the
        plain HDF5 layout (not NWB) and warns.
    fs_Hz : sampling rate (Hz) for ``Units.resolution`` = 1/fs_Hz (s); default
        ``sd.metadata["fs_Hz"]``, else unset (nwbinspector then flags the missing resolution).
    identifier : NWB identifier; default a uuid5 of the file stem, the spike times, metadata,
        attributes and these options (the same recording and options give the same one).
    session_description : default ``sd.metadata["session_description"]``, else a generic text.
    session_start_time : timezone-aware datetime or ISO 8601 string; default
        ``sd.metadata["session_start_time"]``, else 1970-01-01T00:00:00+00:00.
    subject_id, species, sex, age : NWB Subject, written if any is given here or in the dict
        ``sd.metadata["subject"]``; ``age`` is an ISO 8601 duration such as ``"P90D"``.
        nwbinspector reports a missing Subject as CRITICAL; DANDI wants all four, species like
        ``"Mus musculus"`` and sex one of M, F, U, O.
    lab, institution, experimenter : NWBFile fields (experimenter: a name or a list).
    electrode_location : brain area of the electrodes (ElectrodeGroup and electrodes table);
        for a mouse nwbinspector wants an Allen CCF term (e.g. ``"CA1"``), not ``"unknown"``.
    compression : None (fastest), "gzip" or "lzf" for the spike-times dataset.
    """
    if not isinstance(sd, SpikeData):
        raise ExportError(f"sd must be a SpikeData, got {type(sd).__name__}")
    if len(sd.train) != sd.N:
        raise ExportError(f"sd.N={sd.N} but sd.train holds {len(sd.train)} units")
    if compression not in _COMPRESSIONS:
        raise ExportError(
            f"compression must be one of {', '.join(map(repr, _COMPRESSIONS))}, got {compression!r}"
        )
    target = os.fspath(filepath)
    if not isinstance(target, str) or not target:
        raise ExportError(f"filepath must be a file path, got {filepath!r}")
    if target.startswith("s3://"):
        raise ExportError(f"{target}: NWB export writes local files; upload the file afterwards")
    is_nwb = _check_names(
        spike_times_dataset, spike_times_index_dataset, group, ExportError, target
    )
    fs = _resolve_fs(sd, fs_Hz)
    opts = _nwb_options(
        sd,
        {
            "identifier": identifier,
            "session_description": session_description,
            "session_start_time": session_start_time,
            "subject_id": subject_id,
            "species": species,
            "sex": sex,
            "age": age,
            "lab": lab,
            "institution": institution,
            "experimenter": experimenter,
            "electrode_location": electrode_location,
        },
    )
    if Path(target).is_dir():
        raise OutputInTheWayError(f"{target}: a directory is in the way of the output file")
    trains, ends = _checked_trains(sd)
    n_spikes = int(ends[-1]) if ends.size else 0
    if np.asarray(sd.raw_data).size:
        warnings.warn(
            f"{target}: raw_data ({np.shape(sd.raw_data)}) is not exported; "
            "only spike trains, metadata and neuron_attributes are",
            UserWarning,
            stacklevel=2,
        )
    if not is_nwb:
        warnings.warn(
            f"{target}: non-default names (group={group!r}, spike_times_dataset="
            f"{spike_times_dataset!r}, spike_times_index_dataset={spike_times_index_dataset!r}) "
            "write SpikeLab's plain HDF5 layout: this file is not schema-valid NWB (pynwb, "
            "nwbinspector, DANDI and SpikeInterface will not read it). Keep the default names "
            "for a real NWB file.",
            UserWarning,
            stacklevel=2,
        )
        state = _state(sd, fs, 0.0)
        with atomic_file(target) as tmp, _write_errors(target):
            _write_plain(
                tmp,
                group,
                spike_times_dataset,
                spike_times_index_dataset,
                trains,
                ends,
                sd,
                state,
                compression,
            )
        return

    if fs is None and n_spikes:
        warnings.warn(
            f"{target}: sampling rate unknown, Units.resolution is left unset (nwbinspector "
            "reports it); pass fs_Hz= or set metadata['fs_Hz']",
            UserWarning,
            stacklevel=2,
        )
    offset_ms = float(sd.start_time) if sd.start_time < 0 else 0.0
    state_text = json.dumps(_state(sd, fs, offset_ms))
    if opts["identifier"] is None:
        options = json.dumps(
            {k: v for k, v in opts.items() if k != "identifier"}, default=str, sort_keys=True
        )
        opts["identifier"] = _stable_identifier(
            Path(target).stem, trains, ends, state_text + options
        )

    if not target.endswith(".nwb"):
        warnings.warn(
            f"{target}: NWB files (HDF5 backend) should end in '.nwb' (nwbinspector flags it)",
            UserWarning,
            stacklevel=2,
        )
    import h5py
    from pynwb import NWBHDF5IO

    nwbfile, times_io = _build_nwbfile(sd, opts, state_text, ends, fs, offset_ms, compression)
    # An open h5py.File: pynwb would warn that the temporary name does not end in .nwb.
    with atomic_file(target) as tmp, _write_errors(target), h5py.File(tmp, "w") as h5:
        with NWBHDF5IO(file=h5, mode="w") as io:
            io.write(nwbfile, expandable=())  # contiguous datasets: no chunk copies
            if times_io is not None:  # NWB time 0 is SpikeLab time offset_ms
                write_hdf5_times(times_io.dataset, trains, "s", offset_ms=offset_ms)


# ---------------------------------------------------------------------------------- loaders
def _decode(values: Any) -> list:
    out = []
    for v in values:
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        elif isinstance(v, np.generic):
            v = v.item()
        out.append(v)
    return out


class _Parts:
    """What both NWB readers extract, so that they build the same SpikeData."""

    def __init__(self) -> None:
        self.times_s: np.ndarray = np.zeros(0)
        self.ends: np.ndarray | None = None
        self.state: dict | None = None
        self.resolution: float | None = None
        self.columns: dict[str, list] = {}
        self.obs: tuple[float, float] | None = None
        self.electrode_ids: list | None = None
        self.file_meta: dict[str, Any] = {}
        self.start_ms: float | None = None
        self.length_ms: float | None = None


def _parse_state(text: Any, source: str) -> dict:
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    try:
        state = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise LoadError(f"{source}: the SpikeLab state ({STATE_NAME}) is not JSON: {exc}") from None
    if not isinstance(state, dict) or state.get("format") != "spikelab":
        raise LoadError(f"{source}: the SpikeLab state ({STATE_NAME}) is not SpikeLab's")
    if state.get("version", 0) > STATE_VERSION:
        raise LoadError(
            f"{source}: written by a newer SpikeLab (state version {state['version']}); upgrade"
        )
    return state


def _unit_columns(names: list[str], get, n: int) -> dict[str, list]:
    """Scalar per-unit columns (not NWB-defined, not indexed) as Python lists."""
    out = {}
    for name in names:
        if name in _RESERVED_COLUMNS or f"{name}_index" in names or name.endswith("_index"):
            continue
        data = get(name)
        if data is None or getattr(data, "ndim", 1) != 1 or len(data) != n:
            continue
        values = data[:]
        if isinstance(values, np.ndarray) and values.dtype.kind not in "biufOSU":
            continue
        out[name] = _decode(values)
    return out


def _read_nwb_h5py(path: Path, source: str) -> _Parts:
    import h5py

    parts = _Parts()
    with h5py.File(path, "r") as f:
        for key in ("identifier", "session_description", "session_start_time"):
            if key in f and isinstance(f[key], h5py.Dataset):
                parts.file_meta[key] = _decode([f[key][()]])[0]
        if f"scratch/{STATE_NAME}" in f:
            parts.state = _parse_state(f[f"scratch/{STATE_NAME}"][()], source)
        units = f.get("units")
        if not isinstance(units, h5py.Group):
            return parts
        if "spike_times" not in units or "spike_times_index" not in units:
            raise LoadError(f"{source}: the Units table has no spike_times/spike_times_index")
        st = units["spike_times"]
        parts.times_s = np.asarray(st[()], dtype=np.float64)
        parts.ends = np.asarray(units["spike_times_index"][()], dtype=np.int64)
        res = st.attrs.get("resolution")
        parts.resolution = None if res is None else float(res)
        if parts.state is None:
            n = parts.ends.size
            colnames = _decode(units.attrs.get("colnames", []))

            def get(name):
                obj = units.get(name)
                return obj if isinstance(obj, h5py.Dataset) else None

            parts.columns = _unit_columns(colnames, get, n)
            if "unit_name" in units:
                parts.columns["unit_name"] = _decode(units["unit_name"][()])
            if "obs_intervals" in units:
                obs = np.asarray(units["obs_intervals"][()], dtype=np.float64).reshape(-1, 2)
                if obs.size:
                    parts.obs = (float(obs[:, 0].min()), float(obs[:, 1].max()))
            if "electrodes" in units and "electrodes_index" in units:
                rows = np.asarray(units["electrodes"][()], dtype=np.int64)
                idx = np.asarray(units["electrodes_index"][()], dtype=np.int64)
                table = units["electrodes"].attrs.get("table")
                ids = np.asarray(f[table]["id"][()]) if table is not None else None
                parts.electrode_ids = _electrode_ids(rows, idx, ids)
    return parts


def _electrode_ids(rows: np.ndarray, idx: np.ndarray, ids: np.ndarray | None) -> list | None:
    """One electrode id per unit when every unit has exactly one electrode."""
    if ids is None or idx.size == 0 or np.any(np.diff(idx, prepend=0) != 1):
        return None
    return [int(i) for i in ids[rows]]


def _read_nwb_pynwb(path: Path, source: str) -> _Parts:
    from pynwb import NWBHDF5IO

    parts = _Parts()
    try:
        with NWBHDF5IO(str(path), mode="r") as io:
            nwb = io.read()
            parts.file_meta = {
                "identifier": nwb.identifier,
                "session_description": nwb.session_description,
                "session_start_time": nwb.session_start_time.isoformat(),
            }
            if STATE_NAME in nwb.scratch:
                parts.state = _parse_state(nwb.scratch[STATE_NAME].data, source)
            units = nwb.units
            if units is None:
                return parts
            if "spike_times" not in units.colnames:
                raise LoadError(f"{source}: the Units table has no spike_times column")
            index = units["spike_times"]
            parts.times_s = np.asarray(index.target.data[:], dtype=np.float64)
            parts.ends = np.asarray(index.data[:], dtype=np.int64)
            parts.resolution = None if units.resolution is None else float(units.resolution)
            if parts.state is None:
                n = parts.ends.size

                def get(name):
                    return getattr(units[name], "data", None)

                names = list(units.colnames)
                parts.columns = _unit_columns(names, get, n)
                if "unit_name" in names:
                    parts.columns["unit_name"] = _decode(units["unit_name"].data[:])
                if "obs_intervals" in names:
                    obs = np.asarray(units["obs_intervals"].target.data[:], dtype=np.float64)
                    obs = obs.reshape(-1, 2)
                    if obs.size:
                        parts.obs = (float(obs[:, 0].min()), float(obs[:, 1].max()))
                if "electrodes" in names:
                    region = units["electrodes"]
                    rows = np.asarray(region.target.data[:], dtype=np.int64)
                    idx = np.asarray(region.data[:], dtype=np.int64)
                    ids = np.asarray(region.target.table.id.data[:])
                    parts.electrode_ids = _electrode_ids(rows, idx, ids)
    except LoadError:
        raise
    except Exception as exc:  # pynwb/hdmf raise many types for files they cannot map
        raise LoadError(
            f"{source}: pynwb cannot read this file as NWB ({type(exc).__name__}: {exc}); "
            "try prefer_pynwb=False"
        ) from None
    return parts


def _read_plain(path: Path, source: str, group: str, ds: str, ids: str) -> _Parts:
    import h5py

    parts = _Parts()
    with h5py.File(path, "r") as f:
        g = f.get(group.strip("/"))
        if not isinstance(g, h5py.Group):
            raise LoadError(f"{source}: no group {group!r} (the spike trains) in this HDF5 file")
        for name in (ds, ids):
            if not isinstance(g.get(name), h5py.Dataset):
                raise LoadError(f"{source}: group {group!r} has no dataset {name!r}")
        parts.times_s = np.asarray(g[ds][()], dtype=np.float64).reshape(-1)
        parts.ends = np.asarray(g[ids][()], dtype=np.int64).reshape(-1)
        if STATE_NAME in g.attrs:
            parts.state = _parse_state(g.attrs[STATE_NAME], source)
        if "start_time" in g.attrs:
            parts.start_ms = float(g.attrs["start_time"])
        if "length_ms" in g.attrs:
            parts.length_ms = float(g.attrs["length_ms"])
    return parts


def _assemble(parts: _Parts, length_ms: float | None, source: str) -> SpikeData:
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


def _foreign_attributes(parts: _Parts, n: int) -> list[dict] | None:
    cols = dict(parts.columns)
    if parts.electrode_ids is not None:
        cols.setdefault("electrode", parts.electrode_ids)
    if not cols or not n:
        return None
    return [{k: v[i] for k, v in cols.items()} for i in range(n)]


def load_spikedata_from_nwb(
    filepath: str | os.PathLike,
    *,
    prefer_pynwb: bool = True,
    length_ms: float | None = None,
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
    spike_times_dataset, spike_times_index_dataset, group : names of the plain HDF5 layout;
        non-default names read that layout with h5py (spike times in s, cumulative end index).

    Files without SpikeLab's state (other NWB writers) give start_time/length from
    ``obs_intervals`` (else the spikes), metadata from the NWBFile fields and ``fs_Hz`` =
    1/resolution, and neuron_attributes from the scalar Units columns.
    """
    source = os.fspath(filepath)
    if not isinstance(prefer_pynwb, bool):
        raise LoadError(f"{source}: prefer_pynwb must be True or False, got {prefer_pynwb!r}")
    default = _check_names(
        spike_times_dataset, spike_times_index_dataset, group, LoadError, str(source)
    )
    if length_ms is not None:
        try:
            length_ms = float(length_ms)
        except (TypeError, ValueError):
            raise LoadError(
                f"{source}: length_ms must be a number (ms), got {length_ms!r}"
            ) from None
        if not math.isfinite(length_ms) or length_ms < 0:
            raise LoadError(f"{source}: length_ms must be finite and >= 0 ms, got {length_ms!r}")
    path = Path(source)
    if not path.exists():
        raise LoadError(f"{source}: no such file")
    if path.is_dir():
        raise LoadError(f"{source}: is a directory, not an NWB file")
    import h5py

    if not h5py.is_hdf5(path):
        raise LoadError(f"{source}: not an NWB/HDF5 file (no HDF5 signature)")
    try:
        with h5py.File(path, "r") as f:
            is_nwb = "nwb_version" in f.attrs
        if default and is_nwb:
            parts = (_read_nwb_pynwb if prefer_pynwb else _read_nwb_h5py)(path, source)
        else:
            parts = _read_plain(path, source, group, spike_times_dataset, spike_times_index_dataset)
    except LoadError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise LoadError(f"{source}: unreadable ({type(exc).__name__}: {exc})") from None
    return _assemble(parts, length_ms, source)
