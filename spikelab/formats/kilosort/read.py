"""Read a KiloSort/Phy folder (written by SpikeLab, KiloSort, Phy or SpikeInterface) as SpikeData
(times in ms).

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
    read_npy_array,
    read_npy_vector,
    read_text,
    regular_or_absent,
)
from spikelab.formats.kilosort.layout import SIDE_FILE, label
from spikelab.formats.time_units import TIME_UNITS, check_fs, unit_to_ms

__all__ = ["load_spikedata_from_kilosort"]

#: Most cluster_*.tsv tables read from one folder (a sorter writes a handful).
MAX_TABLES = 64
#: Largest templates.npy read for the units' peak channels (a 384-channel probe with 1000
#: templates of 82 samples in float32 is 126 MB); beyond it units get no electrode.
TEMPLATES_MAX_BYTES = 1 << 30


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
        Accepted for SpikeLab 0.1.2's signature; a value other than the default warns and is
        not read. Electrodes and locations come from ``spikelab.json``, else (a sorter's
        folder) from each unit's template: its peak channel in ``templates.npy`` (through
        ``templates_ind.npy``), mapped by ``channel_map.npy`` and ``channel_positions.npy``.

    Units follow cluster_info.tsv (else cluster_group.tsv, else the clusters the other
    ``cluster_<name>.tsv`` list, else sorted cluster ids); clusters with spikes but no row
    are appended. Each unit's ``neuron_attributes`` hold its ``cluster_id``; the rest come
    from ``spikelab.json`` or, without it, the columns of every ``cluster_<name>.tsv``
    (KSLabel, group, quality, metrics), merged by cluster_id, and the electrode and location.
    A params.py that is no valid Python as a whole (a Windows ``dat_path`` in plain quotes)
    is read line by line, still never executed.

    The folder is untrusted: only regular files are read (a FIFO, device or directory in the
    place of one is refused); ``.npy`` headers are checked (numbers only, never objects; a
    vector; a declared size the file holds) before anything is allocated; params.py (1 MiB),
    the cluster tables (32 MiB in all) and ``spikelab.json`` (64 MiB) are refused beyond those
    sizes;
    at most 2**20 units, 64 cluster tables, and a templates.npy of at most 1 GiB (a larger
    one warns and is not read). Any fault is a LoadError naming the file (and the field).
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

    table = _read_cluster_tables(folder)
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
    channels = None
    if side is None:  # another sorter's folder: each unit's peak channel from its template
        by_template = spike_clusters_file == "spike_templates.npy"
        channels = _unit_channels(folder, ids, unit_of_spike, by_template)
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
    if channels is not None:
        for a, (electrode, location) in zip(attrs, channels, strict=True):
            if electrode is not None:
                a.setdefault("electrode", electrode)
            if location is not None:
                a.setdefault("location", location)
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


def _unit_channels(
    folder: Path, ids: list[int], unit_of_spike: np.ndarray, by_template: bool
) -> list[tuple[int | None, list[float] | None]] | None:
    """Each unit's (electrode, location in um) from its template's peak channel, as Phy and
    SpikeInterface place a unit: the template is the cluster's own (clusters are templates)
    or the one most of its spikes came from (``spike_templates.npy``); the peak channel is
    where the template's largest absolute value lies (through ``templates_ind.npy`` for
    sparse templates); the electrode is ``channel_map[channel]`` and the location
    ``channel_positions[channel]``. None when the folder has no ``templates.npy`` (or one
    larger than :data:`TEMPLATES_MAX_BYTES`); (None, None) for a unit whose channel is
    unknown."""
    path = folder / "templates.npy"
    if not regular_or_absent(path):
        return None
    templates = read_npy_array(path, "templates", 3, TEMPLATES_MAX_BYTES)
    if templates is None:
        warnings.warn(
            f"{path}: larger than {TEMPLATES_MAX_BYTES} bytes; units get no electrode",
            UserWarning,
            stacklevel=4,
        )
        return None
    n_templates, _, width = templates.shape
    peak = np.full(n_templates, -1, dtype=np.int64)
    for t0 in range(0, n_templates, 64):  # blocks of templates: small temporaries
        amp = np.abs(templates[t0 : t0 + 64]).max(axis=1, initial=0)
        found = amp.max(axis=1, initial=0) > 0
        peak[t0 : t0 + 64] = np.where(found, amp.argmax(axis=1) if width else -1, -1)
    del templates
    ind_path = folder / "templates_ind.npy"
    if regular_or_absent(ind_path):
        ind = read_npy_array(ind_path, "template channels", 2, TEMPLATES_MAX_BYTES)
        if ind is None or ind.shape != (n_templates, width):
            return None
        has = peak >= 0
        chan = np.full(n_templates, -1.0)
        chan[has] = ind[np.flatnonzero(has), peak[has]]
        inside = np.isfinite(chan) & (chan >= 0) & (chan < 2**31) & (chan == np.round(chan))
        peak = np.where(inside, chan, -1).astype(np.int64)  # -1: padding, or no channel
    chan_map = None
    if regular_or_absent(folder / "channel_map.npy"):
        values = _load_vector(folder, "channel_map.npy", "channel map")
        ok = values.dtype.kind in "iuf" and bool(
            np.all(np.isfinite(values) & (values == np.round(values)))
        )
        if not ok or (values.size and (values.min() < 0 or values.max() >= 2**63)):
            raise LoadError(
                f"{folder / 'channel_map.npy'}: the channel map must hold channel numbers "
                "(integers >= 0)"
            )
        chan_map = values.astype(np.int64)
    n_chan = chan_map.size if chan_map is not None else int(peak.max(initial=-1)) + 1
    positions = None
    if regular_or_absent(folder / "channel_positions.npy"):
        positions = read_npy_array(
            folder / "channel_positions.npy", "channel positions", 2, TEMPLATES_MAX_BYTES
        )
        if positions is not None and (
            positions.shape[0] != n_chan
            or not 1 <= positions.shape[1] <= 3
            or not np.all(np.isfinite(positions))
        ):
            positions = None
    template = _unit_templates(folder, ids, unit_of_spike, by_template, n_templates)
    out: list[tuple[int | None, list[float] | None]] = []
    for t in template.tolist():
        c = int(peak[t]) if 0 <= t < n_templates else -1
        if not 0 <= c < n_chan:
            out.append((None, None))
            continue
        electrode = int(chan_map[c]) if chan_map is not None else c
        location = None if positions is None else [float(v) for v in positions[c]]
        out.append((electrode, location))
    return out


def _unit_templates(
    folder: Path, ids: list[int], unit_of_spike: np.ndarray, by_template: bool, n_templates: int
) -> np.ndarray:
    """Each unit's template (-1 when unknown): its cluster id when clusters are templates,
    else the template most of its spikes came from (Phy's rule after a merge or split), else
    (no spike) its cluster id when that is a template."""
    template = np.asarray(ids, dtype=np.int64)
    template = np.where((template >= 0) & (template < n_templates), template, -1)
    if by_template or not regular_or_absent(folder / "spike_templates.npy"):
        return template
    spike_templates = _as_ids(
        _load_vector(folder, "spike_templates.npy", "spike templates"), folder
    )
    if spike_templates.size != unit_of_spike.size or not spike_templates.size:
        return template
    if spike_templates.min() < 0 or spike_templates.max() >= n_templates:
        return template
    key = unit_of_spike.astype(np.int64) * n_templates + spike_templates
    del spike_templates
    pairs, counts = np.unique(key, return_counts=True)
    units, templates = np.divmod(pairs, n_templates)
    order = np.lexsort((-counts, units))  # per unit, the most frequent template first
    first = np.ones(order.size, dtype=bool)
    first[1:] = units[order][1:] != units[order][:-1]
    template[units[order][first]] = templates[order][first]
    return template


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
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)  # "\d" in a Windows dat_path
            body = ast.parse(text, filename=str(path)).body
    except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:
        # dat_path = 'C:\Users\...' (KiloSort 1 writes the full path, users edit one in):
        # "\U" is no valid escape, so the file is no valid Python (and Phy's exec fails on
        # it). Parse line by line, skipping the lines that do not parse.
        body = _parse_lines(text)
        if not body:
            raise LoadError(
                f"{path}: not a readable params.py ({type(exc).__name__}: {exc})"
            ) from None
    params: dict[str, Any] = {}
    bad: list[str] = []
    for node in body:
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


def _parse_lines(text: str) -> list[ast.stmt]:
    """The statements of each line of ``text`` that parses on its own."""
    body: list[ast.stmt] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)
        for line in text.splitlines():
            try:
                body += ast.parse(line).body
            except (SyntaxError, ValueError, MemoryError, RecursionError):
                continue
    return body


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


def _read_cluster_tables(folder: Path) -> list[dict[str, Any]]:
    """Rows of cluster_info.tsv (else cluster_group.tsv), in file order, with the columns of
    every other ``cluster_<name>.tsv`` (what KiloSort, Phy and SpikeInterface write:
    cluster_KSLabel.tsv, cluster_ContamPct.tsv, cluster_quality.tsv...) merged in by
    cluster_id, as Phy and SpikeInterface read them; a column already there is kept. The
    main table lists the clusters (the others may still list clusters merged away in Phy);
    without one, every cluster the others list. At most :data:`MAX_TABLES` tables of
    :data:`~spikelab.formats.files.TABLE_MAX_BYTES` in all."""
    main = next(
        (n for n in ("cluster_info.tsv", "cluster_group.tsv") if regular_or_absent(folder / n)),
        None,
    )
    try:
        others = sorted(
            e.name
            for e in os.scandir(folder)
            if e.name.startswith("cluster_") and e.name.endswith(".tsv") and e.name != main
        )
    except OSError as exc:
        raise LoadError(f"{folder}: cannot be listed ({exc.strerror})") from None
    names = ([main] if main else []) + others
    if len(names) > MAX_TABLES:
        raise LoadError(
            f"{folder}: {len(names)} cluster_*.tsv tables, more than the {MAX_TABLES} a "
            "KiloSort/Phy folder is read with; refused"
        )
    rows: list[dict[str, Any]] = []
    where: dict[Any, dict[str, Any]] = {}
    budget = TABLE_MAX_BYTES
    for name in names:
        if not regular_or_absent(folder / name):  # removed meanwhile
            continue
        table, used = _read_table(folder / name, budget)
        budget -= used
        if name == main:
            rows = table
            where = {r["cluster_id"]: r for r in rows}
            continue
        for row in table:
            known = where.get(row["cluster_id"])
            if known is None:
                if main is None:  # KiloSort's own tables, before any Phy save
                    where[row["cluster_id"]] = row
                    rows.append(row)
            else:
                for key, value in row.items():
                    known.setdefault(key, value)
    return rows


def _read_cluster_table(folder: Path, names: tuple[str, ...]) -> list[dict[str, Any]]:
    """Rows of the first table of ``names`` in ``folder``, with numbers converted, in file
    order; no row when there is none."""
    for name in names:
        path = folder / name
        if regular_or_absent(path):
            return _read_table(path, TABLE_MAX_BYTES)[0]
    return []


def _read_table(path: Path, limit: int) -> tuple[list[dict[str, Any]], int]:
    """Rows of the cluster table ``path`` (at most ``limit`` bytes) with numbers converted,
    in file order, and the bytes it holds."""
    if limit <= 0:
        raise LoadError(
            f"{path}: the cluster tables hold more than {TABLE_MAX_BYTES} bytes in all; refused"
        )
    text = read_text(path, limit, "cluster table")
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
    return out, len(text.encode("utf-8"))


def _cell(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"True": True, "False": False}.get(text, text)
