"""Read a KiloSort/Phy folder (written by SpikeLab, KiloSort or Phy) as SpikeData (times in ms).

``params.py`` is parsed with ``ast.literal_eval``, never executed; ``spikelab.json``, when the
folder has one, restores what Phy cannot hold (start time, length, metadata, attributes).
"""

from __future__ import annotations

import ast
import csv
import io
import math
import os
import stat
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from spikelab.formats.errors import ExportError, LoadError, spikedata_or_load_error
from spikelab.formats.failure_record import refuse_folder
from spikelab.formats.files import (
    MAX_UNITS,
    PARAMS_MAX_BYTES,
    SIDE_FILE_MAX_BYTES,
    TABLE_MAX_BYTES,
    TABLE_MAX_CELLS,
    check_unit_count,
    describe_mode,
    loader_boundary,
    parse_json,
    read_npy_vector,
    read_text,
    regular_or_absent,
)
from spikelab.formats.kilosort.layout import SIDE_FILE, label
from spikelab.formats.time_units import TIME_UNITS, check_fs, unit_to_ms

__all__ = ["load_spikedata_from_kilosort"]


def load_spikedata_from_kilosort(
    folder: str | os.PathLike,
    fs_Hz: float | None = None,
    *,
    spike_times_file: str = "spike_times.npy",
    spike_clusters_file: str = "spike_clusters.npy",
    time_unit: str = "samples",
    length_ms: float | None = None,
    start_time_ms: float | None = None,
    cluster_info_tsv: str | None = None,
    include_noise: bool = False,
    channel_map_file: str = "channel_map.npy",
    channel_positions_file: str = "channel_positions.npy",
):
    """Read a KiloSort/Phy folder as SpikeData (times in ms).

    Parameters
    ----------
    folder : path
        The folder holding params.py, the spike times and the spike clusters.
    fs_Hz : float, optional
        Sampling rate (Hz); default ``sample_rate`` from params.py (read with
        ``ast.literal_eval``, never executed). Needed when ``time_unit`` is samples.
    spike_times_file, spike_clusters_file : str
        File names inside ``folder``; without ``spike_clusters.npy`` the clusters come from
        ``spike_templates.npy``, as Phy does.
    time_unit : {"samples", "ms", "s"}
        Unit of the spike times file.
    length_ms, start_time_ms : float, optional
        Override the recording length and start (ms). Default: from ``spikelab.json`` when the
        folder has one, else start 0 ms and length up to the last spike.
    cluster_info_tsv : str, optional
        As in SpikeLab 0.1.2: a cluster table (path relative to ``folder``) whose ``group``
        (else ``KSLabel``) column selects the units: only clusters labelled good, mua or
        "mua good" are kept, or every cluster the table lists with ``include_noise=True``. A
        missing table warns and keeps every unit. Default: keep every unit.
    include_noise : bool
        With ``cluster_info_tsv``, keep every cluster it lists whatever its label.
    channel_map_file, channel_positions_file : str
        Accepted for SpikeLab 0.1.2's signature and not read (a value other than the default
        warns): electrodes and locations come from ``spikelab.json`` or the cluster table.

    Units follow cluster_info.tsv (else cluster_group.tsv, else sorted cluster ids); clusters
    with spikes but no row are appended. Each unit's ``neuron_attributes`` hold its
    ``cluster_id``; the rest come from ``spikelab.json`` or, without it, the TSV columns.

    The folder is untrusted: only regular files are read (a FIFO, device or directory in the
    place of one is refused); ``.npy`` headers are checked (numbers only, never objects; a
    vector; a declared size the file holds) before anything is allocated; params.py (1 MiB),
    the cluster table (32 MiB) and ``spikelab.json`` (64 MiB) are refused beyond those sizes;
    at most 2**20 units. Any fault is a LoadError naming the file (and the field).
    """

    folder = Path(folder)
    try:
        mode = os.stat(folder).st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise LoadError(f"{folder}: no such KiloSort/Phy folder") from None
    except OSError as exc:
        raise LoadError(f"{folder}: cannot be read ({exc.strerror})") from None
    if not stat.S_ISDIR(mode):
        raise LoadError(f"{folder}: is {describe_mode(mode)}, not a KiloSort/Phy folder")
    refuse_folder(folder, str(folder), "a KiloSort/Phy folder")
    if time_unit not in TIME_UNITS:
        raise LoadError(
            f"{folder}: time_unit must be one of {', '.join(TIME_UNITS)}; got {time_unit!r}"
        )
    for name, value, default in (
        ("channel_map_file", channel_map_file, "channel_map.npy"),
        ("channel_positions_file", channel_positions_file, "channel_positions.npy"),
    ):
        if value != default:
            warnings.warn(
                f"{folder}: {name}={value!r} is not read (electrodes and locations come from "
                f"{SIDE_FILE} or the cluster table)",
                UserWarning,
                stacklevel=2,
            )
    with loader_boundary(str(folder)):
        sd = _load(
            folder,
            fs_Hz,
            spike_times_file,
            spike_clusters_file,
            time_unit,
            length_ms,
            start_time_ms,
        )
        if cluster_info_tsv is not None:
            sd = _select_units(sd, folder, cluster_info_tsv, include_noise)
        return sd


def _load(
    folder: Path,
    fs_Hz: float | None,
    spike_times_file: str,
    spike_clusters_file: str,
    time_unit: str,
    length_ms: float | None,
    start_time_ms: float | None,
):
    """The body of :func:`load_spikedata_from_kilosort`, inside its loader boundary."""
    params_path = folder / "params.py"
    has_params = regular_or_absent(params_path)
    params = _read_params(params_path) if has_params else {}
    side = _read_side_file(folder)
    if fs_Hz is None:
        fs_Hz = params.get("sample_rate")
        if fs_Hz is None and time_unit == "samples":
            missing = "has no params.py" if not has_params else "params.py lacks"
            raise LoadError(
                f"{folder}: {missing} sample_rate; pass fs_Hz (Hz) to read times in samples"
            )
    fs = None
    if fs_Hz is not None:
        try:
            fs = check_fs(fs_Hz)
        except ExportError as exc:
            raise LoadError(f"{folder}: {exc}") from None
    rate = params.get("sample_rate")
    if fs is not None and rate is not None and fs != float(rate):
        warnings.warn(
            f"{folder}: fs_Hz={fs} Hz overrides sample_rate={rate} Hz of params.py",
            UserWarning,
            stacklevel=2,
        )

    same_file = side is not None and side.get("spike_times_file") == spike_times_file
    if same_file and side.get("time_unit", time_unit) != time_unit:
        raise LoadError(
            f"{folder}: {spike_times_file} holds times in {side['time_unit']!r} (see {SIDE_FILE})"
            f" but time_unit={time_unit!r} was asked; pass time_unit={side['time_unit']!r}"
        )
    times = _load_vector(folder, spike_times_file, "spike times")
    clusters_path = folder / spike_clusters_file
    if spike_clusters_file == "spike_clusters.npy" and not regular_or_absent(clusters_path):
        if regular_or_absent(folder / "spike_templates.npy"):
            spike_clusters_file = "spike_templates.npy"
    clusters = _load_vector(folder, spike_clusters_file, "spike clusters")
    if times.size != clusters.size:
        raise LoadError(
            f"{folder}: {spike_times_file} has {times.size} spikes but {spike_clusters_file} "
            f"has {clusters.size}; the two files must match spike for spike"
        )
    if times.dtype.kind not in "iuf" or (times.dtype.kind == "f" and not np.isfinite(times).all()):
        raise LoadError(f"{folder}: {spike_times_file} must hold finite numbers")
    clusters = _as_ids(clusters, folder / spike_clusters_file)

    offset = 0
    if same_file and time_unit == "samples":
        offset = _sample_offset(side.get("sample_offset", 0), folder / SIDE_FILE)
    if time_unit == "samples" and times.dtype.kind in "iu":
        times = _as_samples(times, offset, folder / spike_times_file)
    times_ms = unit_to_ms(times - offset if offset else times, time_unit, fs)
    del times

    table = _read_cluster_table(folder)
    ids = [int(r["cluster_id"]) for r in table]
    if len(set(ids)) != len(ids):
        raise LoadError(f"{folder}: the cluster table lists a cluster_id more than once")
    check_unit_count(len(ids), str(folder), "the cluster table")
    unit_of_spike, extra = _unit_of_spike(clusters, ids)
    del clusters
    check_unit_count(len(ids) + len(extra), str(folder), f"{spike_clusters_file}")
    ids += extra
    table += [{"cluster_id": c} for c in extra]
    n_units = len(ids)
    order = np.argsort(unit_of_spike, kind="stable")  # radix sort for up to 65536 units
    sorted_ms = times_ms[order]
    del order, times_ms
    counts = np.bincount(unit_of_spike, minlength=n_units) if n_units else np.zeros(0, np.int64)
    trains = np.split(sorted_ms, np.cumsum(counts)[:-1]) if n_units else []

    side_ok = side is not None and side.get("cluster_ids") == ids
    if side is not None and not side_ok:
        warnings.warn(
            f"{folder}: the clusters no longer match {SIDE_FILE} (curated in Phy?): unit "
            "attributes come from the cluster table instead",
            UserWarning,
            stacklevel=2,
        )
    if side_ok:
        saved = side.get("neuron_attributes") or [{} for _ in ids]
        attrs = [dict(a) for a in saved]
        for a, row in zip(attrs, table, strict=True):  # keep labels changed in Phy
            group = row.get("group")
            if isinstance(group, str) and group != label(a, ("group", "quality"), "unsorted"):
                a["group"] = group
    else:
        attrs = [{k: v for k, v in r.items() if k not in ("cluster_id", "id")} for r in table]
    for a, c in zip(attrs, ids, strict=True):
        a["cluster_id"] = c
    metadata = dict(side.get("metadata") or {}) if side is not None else {}
    if side is None and fs is not None:
        metadata["fs_Hz"] = fs

    lo = float(sorted_ms.min()) if sorted_ms.size else 0.0
    hi = float(sorted_ms.max()) if sorted_ms.size else 0.0
    saved = side if side is not None else {}
    if start_time_ms is None:
        start_time_ms = saved.get("start_time_ms", min(0.0, lo))
    start = _finite(start_time_ms, "start_time_ms", folder)
    if length_ms is None:
        length_ms = saved.get("length_ms", max(hi - start, 0.0))
    length = _finite(length_ms, "length_ms", folder)
    end = start + length
    if not math.isfinite(end):
        raise LoadError(
            f"{folder}: start_time_ms {start!r} + length_ms {length!r} overflows; refused"
        )
    # Rounding to samples may carry a spike up to half a sample past either end: clip it back.
    tol = 0.5 * 1000.0 / fs if time_unit == "samples" else 0.0
    if time_unit == "s":
        tol = 4 * np.finfo(np.float64).eps * max(abs(start), abs(end), 1.0)
    if sorted_ms.size and (lo < start - tol or hi > end + tol):
        raise LoadError(
            f"{folder}: spikes span {lo}..{hi} ms, outside the recording {start}..{end} ms "
            "(start_time_ms, length_ms); pass matching start_time_ms/length_ms"
        )
    if sorted_ms.size and (lo < start or hi > end):
        np.clip(sorted_ms, start, end, out=sorted_ms)
    return spikedata_or_load_error(
        f"{folder}: invalid spike data",
        trains,
        start_time=start,
        length=length,
        neuron_attributes=attrs,
        metadata=metadata,
    )


def _unit_of_spike(clusters: np.ndarray, ids: list[int]) -> tuple[np.ndarray, list[int]]:
    """Unit index of every spike (units: ``ids``, then ``extra`` ids that only have spikes).

    The index is uint16 when there are at most 65536 units, so numpy radix-sorts it.
    """
    if not clusters.size:
        return np.zeros(0, np.uint16), []
    lo, hi = int(clusters.min()), int(clusters.max())
    if lo >= 0 and hi < max(1 << 20, clusters.size):  # dense ids: a lookup table
        seen = np.zeros(hi + 1, dtype=bool)
        seen[clusters] = True
        present = np.flatnonzero(seen)
        del seen
    else:
        present = np.unique(clusters)
    extra = np.setdiff1d(present, np.asarray(ids, dtype=np.int64)).tolist()
    all_ids = np.asarray(ids + extra, dtype=np.int64)
    dtype = np.uint16 if all_ids.size <= 1 << 16 else np.int64
    if lo >= 0 and hi < max(1 << 20, clusters.size):
        lut = np.zeros(hi + 1, dtype=dtype)
        inside = all_ids <= hi
        lut[all_ids[inside]] = np.flatnonzero(inside)
        return lut[clusters], extra
    order = np.argsort(all_ids)
    where = np.searchsorted(all_ids[order], clusters)
    return order[where].astype(dtype), extra


def _sample_offset(value: Any, path: Path) -> int:
    """``sample_offset`` of the side file: an integer number of samples within int64."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not -(2**63) < value < 2**63:
        raise LoadError(
            f"{path}: sample_offset must be an integer number of samples within int64, "
            f"got {value!r:.80}"
        )
    return value


def _as_samples(times: np.ndarray, offset: int, path: Path) -> np.ndarray:
    """Integer sample indices as int64, refused when they (less ``offset``) leave int64."""
    if not times.size:
        return times.astype(np.int64)
    lo, hi = int(times.min()), int(times.max())
    if hi >= 2**63 or not (-(2**63) <= lo - offset and hi - offset < 2**63):
        raise LoadError(
            f"{path}: spike times {lo}..{hi} samples (less sample_offset {offset}) leave the "
            "int64 range; refused"
        )
    return times.astype(np.int64, copy=False)


def _finite(value: Any, what: str, folder: Path) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        out = math.nan
    if not math.isfinite(out):
        raise LoadError(f"{folder}: {what} must be a finite number of ms, got {value!r}")
    return out


def _read_params(path: Path) -> dict[str, Any]:
    """Literal assignments of a params.py (names lower-cased), parsed without executing it;
    at most :data:`~spikelab.formats.files.PARAMS_MAX_BYTES` are read."""
    text = read_text(path, PARAMS_MAX_BYTES, "params.py")
    try:
        tree = ast.parse(text, filename=str(path))
    except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:
        raise LoadError(f"{path}: not a readable params.py ({type(exc).__name__}: {exc})") from None
    params: dict[str, Any] = {}
    bad: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if not isinstance(target, ast.Name):
            continue
        try:
            params[target.id.lower()] = ast.literal_eval(value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            bad.append(target.id.lower())
    if "sample_rate" in bad:
        raise LoadError(f"{path}: sample_rate is not a plain number (it is not executed)")
    rate = params.get("sample_rate")
    if rate is not None and (
        isinstance(rate, bool) or not isinstance(rate, int | float) or not math.isfinite(rate)
    ):
        raise LoadError(f"{path}: sample_rate must be a number in Hz, got {rate!r}")
    return params


def _read_side_file(folder: Path) -> dict | None:
    path = folder / SIDE_FILE
    if not regular_or_absent(path):
        return None
    text = read_text(path, SIDE_FILE_MAX_BYTES, f"{SIDE_FILE} side file")
    side = parse_json(text, str(path), "the side file")
    if not isinstance(side, dict):
        raise LoadError(f"{path}: expected a JSON object, got {type(side).__name__}")
    attrs = side.get("neuron_attributes")
    if attrs is not None and not (
        isinstance(attrs, list) and all(isinstance(a, dict) for a in attrs)
    ):
        raise LoadError(f"{path}: neuron_attributes must be a list of objects")
    if not isinstance(side.get("metadata", {}), dict):
        raise LoadError(f"{path}: metadata must be an object")
    ids = side.get("cluster_ids")
    if ids is not None and attrs is not None and len(attrs) != len(ids):
        raise LoadError(f"{path}: {len(attrs)} neuron_attributes for {len(ids)} cluster_ids")
    for key in ("start_time_ms", "length_ms", "sample_offset", "fs_Hz"):
        value = side.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise LoadError(f"{path}: {key} must be a number, got {value!r}")
    return side


def _load_vector(folder: Path, name: str, what: str) -> np.ndarray:
    """The ``.npy`` file ``name`` as a vector (KiloSort writes (n, 1) columns), its header
    checked before anything is allocated (see :func:`~spikelab.formats.files.read_npy_vector`)."""
    path = folder / name
    if not regular_or_absent(path):
        raise LoadError(f"{folder}: {what} file {name} is missing")
    try:
        return read_npy_vector(path, what)
    except FileNotFoundError:  # removed meanwhile
        raise LoadError(f"{folder}: {what} file {name} is missing") from None


def _as_ids(values: np.ndarray, path: Path) -> np.ndarray:
    """Cluster ids as int64; ids that are not integers, or not int64s, are a LoadError."""
    if values.dtype.kind == "f":
        if not np.all(np.isfinite(values) & (values == np.round(values))):
            raise LoadError(f"{path}: cluster ids must be integers")
        if values.size and (values.min() < -(2.0**63) or values.max() >= 2.0**63):
            raise LoadError(f"{path}: cluster ids must be int64 integers")
    elif values.dtype.kind not in "iu":
        raise LoadError(f"{path}: cluster ids must be integers, got dtype {values.dtype}")
    elif values.dtype == np.uint64 and values.size and values.max() >= 2**63:
        raise LoadError(f"{path}: cluster ids must be int64 integers, got {int(values.max())}")
    return values.astype(np.int64, copy=False)


def _select_units(sd, folder: Path, table_name: str, include_noise: bool):
    """``sd`` with only the units that ``table_name`` labels good or mua (every unit it lists
    with ``include_noise``), as SpikeLab 0.1.2's ``cluster_info_tsv`` selects them."""
    if not regular_or_absent(folder / table_name):
        warnings.warn(
            f"{folder / table_name}: no such cluster table; every unit is kept",
            UserWarning,
            stacklevel=3,
        )
        return sd
    rows = _read_cluster_table(folder, (table_name,))
    column = next((c for c in ("group", "KSLabel") if any(c in r for r in rows)), None)
    if include_noise:
        keep = {r["cluster_id"] for r in rows}
    elif column is None:
        warnings.warn(
            f"{folder / table_name}: no group or KSLabel column; every unit is kept",
            UserWarning,
            stacklevel=3,
        )
        return sd
    else:
        good = {"good", "mua", "mua good"}
        keep = {r["cluster_id"] for r in rows if str(r.get(column, "")).lower() in good}
    ids = [a["cluster_id"] for a in sd.neuron_attributes]
    chosen = [i for i, c in enumerate(ids) if c in keep]
    return spikedata_or_load_error(
        f"{folder}: invalid spike data",
        [sd.train[i] for i in chosen],
        start_time=sd.start_time,
        length=sd.length,
        neuron_attributes=[sd.neuron_attributes[i] for i in chosen],
        metadata=sd.metadata,
    )


def _read_cluster_table(
    folder: Path, names: tuple[str, ...] = ("cluster_info.tsv", "cluster_group.tsv")
) -> list[dict[str, Any]]:
    """Rows of the first table of ``names`` in ``folder`` (cluster_info.tsv, else
    cluster_group.tsv) with numbers converted, in file order."""
    for name in names:
        path = folder / name
        if regular_or_absent(path):
            break
    else:
        return []
    text = read_text(path, TABLE_MAX_BYTES, "cluster table")
    first = text.split("\n", 1)[0]
    rows, cells = [], 0
    try:
        with io.StringIO(text, newline="") as fh:
            for row in csv.DictReader(fh, delimiter="\t" if "\t" in first else ","):
                cells += len(row) + len(row.get(None) or ())
                if len(rows) >= MAX_UNITS or cells > TABLE_MAX_CELLS:
                    raise LoadError(
                        f"{path}: more than {MAX_UNITS} rows or {TABLE_MAX_CELLS} cells; refused"
                    )
                rows.append(row)
    except csv.Error as exc:
        raise LoadError(f"{path}: not a readable table ({exc})") from None
    out = []
    for line, row in enumerate(rows, start=2):
        row = {k: _cell(v) for k, v in row.items() if k is not None and v not in (None, "")}
        if "cluster_id" not in row and "id" in row:
            row["cluster_id"] = row["id"]
        cid = row.get("cluster_id")
        if isinstance(cid, float) and cid.is_integer():
            cid = row["cluster_id"] = int(cid)
        if not isinstance(cid, int) or isinstance(cid, bool):
            raise LoadError(f"{path}: line {line} has no integer cluster_id ({cid!r:.80})")
        if not -(2**63) <= cid < 2**63:
            raise LoadError(f"{path}: line {line}: cluster_id {cid} is outside int64")
        out.append(row)
    return out


def _cell(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"True": True, "False": False}.get(text, text)
