"""KiloSort/Phy folders: write SpikeData (times in ms) for Phy/SpikeInterface and read it back.

A folder written by :func:`export_spikedata_to_kilosort` holds

* ``spike_times.npy`` - every spike, sorted in time across units (int64 samples by default);
* ``spike_clusters.npy`` / ``spike_templates.npy`` - int32 cluster id / unit index per spike;
* ``amplitudes.npy`` - float64 ones (amplitudes are unknown);
* ``params.py`` - ``dat_path``, ``n_channels_dat``, ``dtype``, ``offset``, ``sample_rate`` (Hz),
  ``hp_filtered``;
* ``channel_map.npy`` (int32, one entry per channel) and ``channel_positions.npy``
  (n_channels x 2, um);
* ``cluster_group.tsv`` and ``cluster_info.tsv`` - one row per unit, empty units included;
* ``spikelab.json`` - what Phy cannot hold (start time, length, metadata, attributes), so that
  :func:`load_spikedata_from_kilosort` restores the SpikeData.
"""

from __future__ import annotations

import ast
import contextlib
import csv
import json
import math
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from spikelab.data_loaders._common import (
    TIME_UNITS,
    ExportError,
    LoadError,
    OutputInTheWayError,
    atomic_directory,
    check_fs,
    check_time_unit,
    convert_pieces,
    json_safe,
    ms_to_unit,
    spikedata_or_load_error,
    unit_to_ms,
)

__all__ = ["export_spikedata_to_kilosort", "load_spikedata_from_kilosort", "SIDE_FILE"]

SIDE_FILE = "spikelab.json"
_FIXED_FILES = (
    "spike_templates.npy",
    "amplitudes.npy",
    "params.py",
    "channel_map.npy",
    "channel_positions.npy",
    "cluster_group.tsv",
    "cluster_info.tsv",
    SIDE_FILE,
)
# Columns of cluster_info.tsv that the exporter fills itself; attributes with these names stay
# in spikelab.json only. ``si_unit_id`` would make SpikeInterface renumber the units.
_RESERVED_COLUMNS = {"cluster_id", "id", "group", "KSLabel", "ch", "n_spikes", "si_unit_id"}
_MAX_CLUSTER_ID = 2**31 - 1  # phylib holds cluster ids as int32
_CHUNK = 1 << 20  # spikes per chunk when writing constant or derived columns
_WINDOW_SPIKES = 1 << 17  # spikes per time window of the global sort (sorted in cache)


# --------------------------------------------------------------------------------- export
def export_spikedata_to_kilosort(
    sd,
    folder: str | os.PathLike,
    *,
    fs_Hz: float,
    spike_times_file: str = "spike_times.npy",
    spike_clusters_file: str = "spike_clusters.npy",
    time_unit: str = "samples",
    cluster_ids: Any = None,
    n_channels: int | None = None,
    dtype: str = "int16",
    dat_path: str = "",
) -> tuple[str, str]:
    """Write ``sd`` as a KiloSort/Phy folder that phylib and SpikeInterface open.

    Parameters
    ----------
    sd : SpikeData
        Spike times in ms.
    folder : path
        Output folder; replaced atomically (a file in its place raises ExportError).
    fs_Hz : float
        Sampling rate (Hz) used for samples and written as ``sample_rate`` in params.py.
    spike_times_file, spike_clusters_file : str
        File names (inside ``folder``) of the spike times and cluster ids.
    time_unit : {"samples", "ms", "s"}
        Unit of ``spike_times_file``: int64 samples at ``fs_Hz`` (what Phy and SpikeInterface
        expect), or float64 ms or s. For samples with a negative ``start_time`` every sample
        is shifted by ``round(-start_time * fs_Hz / 1000)`` so none is negative; the shift is
        recorded in ``spikelab.json`` as ``sample_offset``.
    cluster_ids : sequence of int, optional
        One unique id (0 <= id < 2**31) per unit. Default: ``neuron_attributes[i]
        ["cluster_id"]`` when every unit has one, else ``0..N-1``.
    n_channels : int, optional
        ``n_channels_dat`` in params.py; default one more than the largest electrode (1 when
        electrodes are unknown).
    dtype : str
        Raw-data dtype written to params.py (no raw data is written).
    dat_path : str
        Raw-data path written to params.py; the default ``''`` means "no raw data", which
        phylib and SpikeInterface accept.

    Channels are the distinct ``sd.electrodes`` (channel_map holds the electrode numbers,
    channel_positions the x, y location (um) of the first unit on each). When electrodes are
    unknown (or negative) a single dummy channel 0 at (0, 0) is written, since phylib needs
    at least one. A ``start_time`` other than 0 ms warns (Phy has no start time); raw data
    is not written. Returns the paths of the spike times and spike clusters files.
    """
    fs = check_fs(fs_Hz)
    check_time_unit(time_unit, fs)
    times_name = _check_file_name(spike_times_file, "spike_times_file")
    clusters_name = _check_file_name(spike_clusters_file, "spike_clusters_file")
    if times_name == clusters_name:
        raise ExportError(f"spike_times_file and spike_clusters_file are both {times_name!r}")
    try:
        n_units = int(sd.N)
        trains = list(sd.train)
    except (AttributeError, TypeError):
        raise ExportError(f"expected a SpikeData, got {type(sd).__name__}") from None
    attrs = sd.neuron_attributes
    ids = _cluster_ids(cluster_ids, attrs, n_units)
    raw_dtype = _check_dtype(dtype)
    if not isinstance(dat_path, str):
        raise ExportError(f"dat_path must be a string (a path or ''), got {dat_path!r}")
    chan_map, chan_pos, unit_chan = _channels(sd, n_units)
    n_chan_dat = int(chan_map.max()) + 1
    if n_channels is not None:
        if isinstance(n_channels, bool) or not isinstance(n_channels, int | np.integer):
            raise ExportError(f"n_channels must be an integer, got {n_channels!r}")
        if n_channels < n_chan_dat:
            raise ExportError(
                f"n_channels={n_channels} but the units sit on channels up to "
                f"{n_chan_dat - 1}; pass n_channels >= {n_chan_dat} or leave it None"
            )
        n_chan_dat = int(n_channels)
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputInTheWayError(f"{folder}: a file is in the way of the output folder")

    start_ms, length_ms = float(sd.start_time), float(sd.length)
    offset = 0
    if time_unit == "samples" and start_ms < 0:
        offset = -int(np.rint(start_ms * (fs / 1000.0)))
    if start_ms != 0:
        where = (
            f"samples are shifted by {offset} so that start_time is sample 0"
            if offset
            else f"spike times are written as they are (time 0 ms is {time_unit} 0)"
        )
        warnings.warn(
            f"start_time is {start_ms} ms but Phy/KiloSort folders have no start time: {where}; "
            f"{SIDE_FILE} records start_time_ms for load_spikedata_from_kilosort",
            UserWarning,
            stacklevel=2,
        )

    counts = np.fromiter((t.size for t in trains), dtype=np.int64, count=n_units)
    side = {
        "format": "spikelab-kilosort",
        "version": 1,
        "fs_Hz": fs,
        "time_unit": time_unit,
        "spike_times_file": times_name,
        "spike_clusters_file": clusters_name,
        "sample_offset": offset,
        "start_time_ms": start_ms,
        "length_ms": length_ms,
        "n_units": n_units,
        "cluster_ids": [int(c) for c in ids],
        "metadata": json_safe(dict(sd.metadata or {})),
        "neuron_attributes": None if attrs is None else json_safe(list(attrs)),
    }
    with atomic_directory(folder) as tmp:
        n_spikes = _write_spikes(
            tmp, trains, counts, ids, fs, time_unit, offset, times_name, clusters_name
        )
        _write_params(tmp / "params.py", dat_path, n_chan_dat, raw_dtype, fs)
        _save(tmp / "channel_map.npy", chan_map.astype(np.int32))
        _save(tmp / "channel_positions.npy", chan_pos)
        _write_cluster_tables(tmp, ids, attrs, unit_chan, counts)
        side["n_spikes"] = n_spikes
        with open(tmp / SIDE_FILE, "w", encoding="utf-8") as fh:
            json.dump(side, fh, indent=1)
    return str(folder / times_name), str(folder / clusters_name)


def _check_file_name(name: Any, what: str) -> str:
    if not isinstance(name, str) or not name or name in (".", ".."):
        raise ExportError(f"{what} must be a file name such as 'spike_times.npy', got {name!r}")
    if "/" in name or "\\" in name or "\0" in name:
        raise ExportError(f"{what} must be a plain file name inside the folder, got {name!r}")
    if name in _FIXED_FILES:
        raise ExportError(f"{what}={name!r} would overwrite the exporter's own {name}")
    return name


def _check_dtype(dtype: Any) -> str:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise ExportError(
            f"dtype must be a numpy dtype name such as 'int16', got {dtype!r}"
        ) from None
    if dt.kind not in "iuf":
        raise ExportError(f"dtype must be a numeric raw-data dtype such as 'int16', got {dtype!r}")
    return dt.name


def _cluster_ids(cluster_ids: Any, attrs: Any, n_units: int) -> np.ndarray:
    """Per-unit cluster ids (int64): from ``cluster_ids``, the attributes, or 0..N-1."""
    if cluster_ids is not None:
        source = "cluster_ids"
        values = cluster_ids
    elif (
        attrs
        and len(attrs) == n_units
        and all(isinstance(a, dict) and a.get("cluster_id") is not None for a in attrs)
    ):
        source = "neuron_attributes[i]['cluster_id']"
        values = [a["cluster_id"] for a in attrs]
    else:
        return np.arange(n_units, dtype=np.int64)
    try:
        arr = np.asarray(values)
    except (TypeError, ValueError):
        raise ExportError(f"{source} must be a sequence of integers, got {values!r}") from None
    if arr.ndim != 1 or arr.size != n_units:
        raise ExportError(f"{source} must hold one id per unit: {n_units} expected, got {arr.size}")
    if arr.size and (
        arr.dtype.kind not in "iuf"
        or (arr.dtype.kind == "f" and not np.all(np.isfinite(arr) & (arr == np.round(arr))))
    ):
        raise ExportError(f"{source} must be integers, got {arr.tolist()!r}")
    arr = arr.astype(np.int64) if arr.size else np.zeros(0, dtype=np.int64)
    if arr.size and (arr.min() < 0 or arr.max() > _MAX_CLUSTER_ID):
        raise ExportError(
            f"{source} must lie in 0..{_MAX_CLUSTER_ID} (Phy and SpikeInterface index by them), "
            f"got {int(arr.min())}..{int(arr.max())}"
        )
    uniq, n_seen = np.unique(arr, return_counts=True)
    if uniq.size != arr.size:
        raise ExportError(f"{source} must be unique; repeated: {uniq[n_seen > 1].tolist()}")
    return arr


def _channels(sd, n_units: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(channel_map int64, channel_positions (C, 2) float64, channel index of each unit)."""
    electrodes = sd.electrodes if n_units else None
    if electrodes is None or (electrodes.size and electrodes.min() < 0):
        return np.zeros(1, np.int64), np.zeros((1, 2)), np.zeros(n_units, np.int64)
    chan_map, first_unit, unit_chan = np.unique(electrodes, return_index=True, return_inverse=True)
    locs = sd.unit_locations
    if locs is None or locs.shape[1] == 0:
        pos = np.c_[np.zeros(chan_map.size), np.arange(chan_map.size, dtype=np.float64)]
    else:
        pos = np.zeros((chan_map.size, 2))
        d = min(2, locs.shape[1])
        pos[:, :d] = locs[first_unit, :d]
    return chan_map, pos, unit_chan.reshape(-1)


def _save(path: Path, arr: np.ndarray) -> None:
    with open(path, "wb") as fh:
        try:
            np.lib.format.write_array(fh, np.ascontiguousarray(arr), allow_pickle=False)
        except OSError as exc:
            if exc.errno is not None:
                raise
            # numpy reports a short write as "N requested and M written", without the cause
            raise OSError(
                f"{path}: the file could not be written in full ({exc}); is the disk full, "
                "or a file-size limit reached?"
            ) from None


class _NpyWriter:
    """A 1-D ``.npy`` file of ``n`` values of ``dtype``, written piece by piece: the same bytes
    as ``np.save`` of the whole array, without holding it."""

    def __init__(self, path: Path, dtype: Any, n: int) -> None:
        self.path, self.dtype, self.n, self.written = path, np.dtype(dtype), n, 0

    def __enter__(self) -> _NpyWriter:
        self._fh = open(self.path, "wb")
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype)}
        header.update(fortran_order=False, shape=(self.n,))
        np.lib.format.write_array_header_1_0(self._fh, header)
        return self

    def write(self, values: np.ndarray) -> None:
        self._fh.write(np.ascontiguousarray(values, dtype=self.dtype))
        self.written += values.size

    def __exit__(self, exc_type, *exc) -> None:
        self._fh.close()
        if exc_type is None and self.written != self.n:
            raise RuntimeError(f"{self.path}: {self.written} values written, {self.n} expected")


def _save_constant(path: Path, value: float, n: int) -> None:
    """Save ``np.full(n, value)`` (float64) without holding the whole array in memory."""
    with _NpyWriter(path, np.float64, n) as out:
        chunk = np.full(min(n, _CHUNK), value, dtype=np.float64)
        for start in range(0, n, _CHUNK):
            out.write(chunk[: min(_CHUNK, n - start)])


def _write_spikes(
    tmp: Path,
    trains: list[np.ndarray],
    counts: np.ndarray,
    ids: np.ndarray,
    fs: float,
    unit: str,
    offset: int,
    times_name: str,
    clusters_name: str,
) -> int:
    """Write times, clusters, templates and amplitudes, all in global time order, streamed
    window by window (no array of all spikes is held)."""
    n = int(counts.sum())
    same_ids = np.array_equal(ids, np.arange(len(trains)))
    ids32 = ids.astype(np.int32)
    time_dtype = np.int64 if unit == "samples" else np.float64
    with contextlib.ExitStack() as files:
        times_out = files.enter_context(_NpyWriter(tmp / times_name, time_dtype, n))
        templates_out = files.enter_context(_NpyWriter(tmp / "spike_templates.npy", np.int32, n))
        clusters_out = files.enter_context(_NpyWriter(tmp / clusters_name, np.int32, n))
        for times, index in _time_ordered(trains, n, unit, fs, offset):
            times_out.write(times)
            templates_out.write(index)
            clusters_out.write(index if same_ids else ids32[index])
    _save_constant(tmp / "amplitudes.npy", 1.0, n)
    return n


def _time_ordered(
    trains: list[np.ndarray], n: int, unit: str, fs: float, offset: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """All ``n`` spikes as (times in ``unit``, + ``offset`` for samples; int32 unit index), in
    the order of a stable sort of the unit-major spikes by time (ties in unit order).

    Yielded window by window (views of reused buffers): each time window gathers its spikes
    from every unit (unit-major) and is sorted alone. The spikes at a window's last time wait
    for the next window, which may hold more spikes at that time from lower units.
    """
    trains = [t if _ascending(t) else np.sort(t) for t in trains]
    bits = max(len(trains) - 1, 0).bit_length()
    packed = unit == "samples" and _packable(trains, fs, offset, bits)
    bounds = _window_bounds(trains, n)
    lo, last = bounds[:, 0], bounds.shape[1] - 1
    scratch = [np.zeros(0), np.zeros(0, dtype=np.int64)]
    for k in range(1, last + 1):
        hi = bounds[:, k]
        window = _gather(trains, lo, hi, unit, fs, offset, scratch)
        if window is None:
            continue
        times, index = _sort_packed(*window, bits) if packed else _sort_stable(*window)
        lo = hi
        if k < last:
            cut = int(np.searchsorted(times, times[-1]))
            lo = hi - np.bincount(index[cut:], minlength=len(trains))
            times, index = times[:cut], index[:cut]
        yield times, index


def _gather(
    trains: list[np.ndarray], lo, hi, unit: str, fs: float, offset: int, scratch: list
) -> tuple[np.ndarray, np.ndarray] | None:
    """The spikes ``trains[u][lo[u]:hi[u]]`` of all units, unit-major, as (times converted to
    ``unit``, + ``offset`` for samples; int32 unit index), or None when there is none.
    ``scratch`` holds the float64 and int64 buffers, grown here when too small."""
    active = np.flatnonzero(hi > lo)
    if not active.size:
        return None
    lens = (hi - lo)[active]
    size = int(lens.sum())
    if scratch[0].size < size:
        scratch[:] = np.empty(size), np.empty(size, dtype=np.int64)
    spans = zip(active.tolist(), lo[active].tolist(), hi[active].tolist(), strict=True)
    pieces = [trains[u][a:b] for u, a, b in spans]
    values = convert_pieces(pieces, unit, fs, *scratch, total=size)
    if unit == "samples" and offset:
        values += offset
    return values, np.repeat(active.astype(np.int32), lens)


def _ascending(t: np.ndarray) -> bool:
    return t.size < 2 or bool((t[1:] >= t[:-1]).all())


def _packable(trains: list[np.ndarray], fs: float, offset: int, bits: int) -> bool:
    """Whether every sample (+ offset) fits in 0 <= s < 2**(63 - bits), beside a unit index."""
    firsts = [t[0] for t in trains if t.size]
    if not firsts:
        return True
    last = max(t[-1] for t in trains if t.size)  # rounding is monotonic: extremes from extremes
    lo, hi = ms_to_unit([min(firsts), last], "samples", fs) + offset
    return lo >= 0 and hi < 1 << (63 - bits)


def _window_bounds(trains: list[np.ndarray], n: int, size: int | None = None) -> np.ndarray:
    """(N, W + 1) int64: unit u's spikes in time window k are ``trains[u][b[u, k]:b[u, k+1]]``.

    Windows hold about ``size`` spikes: their edges (ms) are quantiles of a subsample.
    """
    size = size or _WINDOW_SPIKES
    count = -(-n // size)
    edges = np.zeros(0)
    if count > 1:
        step = max(1, n // (count * 64))
        sample = np.sort(np.concatenate([t[::step] for t in trains]))
        edges = np.unique(sample[np.arange(1, count) * sample.size // count])
    bounds = np.zeros((len(trains), edges.size + 2), dtype=np.int64)
    for u, t in enumerate(trains):
        bounds[u, 1:-1] = np.searchsorted(t, edges)
        bounds[u, -1] = t.size
    return bounds


def _sort_stable(values: np.ndarray, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(values, kind="stable")
    return values[order], index[order]


def _sort_packed(
    samples: np.ndarray, index: np.ndarray, bits: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sort int64 ``samples`` (overwritten) with their unit ``index`` as one unsigned key
    ``(sample - lowest) << bits | unit``: the key order is (sample, unit), so any sort of the
    keys gives the stable order. 32-bit keys when the window's span allows (faster)."""
    low = int(samples.min())
    span = (int(samples.max()) - low + 1) << bits
    samples -= low
    samples <<= bits
    samples |= index
    keys = _radix_sort(samples.astype(np.uint32 if span <= 1 << 32 else np.uint64), span)
    index = (keys & ((1 << bits) - 1)).astype(np.int32)
    keys >>= bits
    samples[...] = keys
    samples += low
    return samples, index


def _radix_sort(keys: np.ndarray, span: int) -> np.ndarray:
    """Sorted unsigned ``keys`` (< ``span``), by 16-bit least-significant-digit passes:
    numpy's stable argsort of uint16 is a counting sort, far faster here than comparison
    sorts. ``keys`` is overwritten; the result is it or a new array."""
    other = np.empty_like(keys)
    digit = np.empty(keys.size, dtype=np.uint16)
    shift = 0
    while (span - 1) >> shift:
        np.right_shift(keys, shift, out=other)
        digit[...] = other  # the low 16 bits
        np.take(keys, np.argsort(digit, kind="stable"), out=other)
        keys, other = other, keys
        shift += 16
    return keys


def _write_params(path: Path, dat_path: str, n_chan_dat: int, dtype: str, fs: float) -> None:
    lines = [
        f"dat_path = {dat_path!r}",
        f"n_channels_dat = {n_chan_dat}",
        f"dtype = {dtype!r}",
        "offset = 0",
        f"sample_rate = {fs!r}",
        "hp_filtered = False",
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _tsv_value(value: Any) -> str | None:
    """Text of a scalar attribute for a TSV cell, or None if the value is not a scalar."""
    if isinstance(value, np.generic) and value.dtype.kind in "biufU":
        value = value.item()
    if isinstance(value, bool | str):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    return None


def _label(attr: dict, keys: tuple[str, ...], default: str | None) -> str | None:
    for key in keys:
        value = attr.get(key)
        if isinstance(value, str) and value:
            return value
    return default


def _write_cluster_tables(
    tmp: Path, ids: np.ndarray, attrs: Any, unit_chan: np.ndarray, counts: np.ndarray
) -> None:
    """cluster_group.tsv (cluster_id, group) and cluster_info.tsv (one row per unit)."""
    n_units = ids.size
    attrs = list(attrs) if attrs else [{} for _ in range(n_units)]
    groups = [_label(a, ("group", "quality"), "unsorted") for a in attrs]
    ks = [_label(a, ("KSLabel",), None) for a in attrs]
    extra: dict[str, list[str]] = {}
    for i, a in enumerate(attrs):
        for key, value in a.items():
            if not isinstance(key, str) or not key or key in _RESERVED_COLUMNS:
                continue
            if any(c in key for c in "\t\r\n"):
                continue
            text = _tsv_value(value)
            if text is None:
                continue
            extra.setdefault(key, [""] * n_units)[i] = text
    header = ["cluster_id", "group"] + (["KSLabel"] if any(ks) else []) + ["ch", "n_spikes"]
    header += list(extra)
    with open(tmp / "cluster_group.tsv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, delimiter="\t", lineterminator="\n")
        w.writerow(["cluster_id", "group"])
        w.writerows([int(c), g] for c, g in zip(ids, groups, strict=True))
    with open(tmp / "cluster_info.tsv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, delimiter="\t", lineterminator="\n")
        w.writerow(header)
        for i in range(n_units):
            row = [int(ids[i]), groups[i]] + ([ks[i] or ""] if "KSLabel" in header else [])
            row += [int(unit_chan[i]), int(counts[i])] + [col[i] for col in extra.values()]
            w.writerow(row)


# ----------------------------------------------------------------------------------- load
def load_spikedata_from_kilosort(
    folder: str | os.PathLike,
    fs_Hz: float | None = None,
    *,
    spike_times_file: str = "spike_times.npy",
    spike_clusters_file: str = "spike_clusters.npy",
    time_unit: str = "samples",
    length_ms: float | None = None,
    start_time_ms: float | None = None,
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

    Units follow cluster_info.tsv (else cluster_group.tsv, else sorted cluster ids); clusters
    with spikes but no row are appended. Each unit's ``neuron_attributes`` hold its
    ``cluster_id``; the rest come from ``spikelab.json`` or, without it, the TSV columns.
    """

    folder = Path(folder)
    if not folder.is_dir():
        raise LoadError(f"{folder}: no such KiloSort/Phy folder")
    if time_unit not in TIME_UNITS:
        raise LoadError(f"time_unit must be one of {', '.join(TIME_UNITS)}; got {time_unit!r}")
    params_path = folder / "params.py"
    params = _read_params(params_path) if params_path.is_file() else {}
    side = _read_side_file(folder)
    if fs_Hz is None:
        fs_Hz = params.get("sample_rate")
        if fs_Hz is None and time_unit == "samples":
            missing = "has no params.py" if not params_path.is_file() else "params.py lacks"
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
    if not clusters_path.is_file() and spike_clusters_file == "spike_clusters.npy":
        if (folder / "spike_templates.npy").is_file():
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

    offset = int(side.get("sample_offset", 0)) if same_file and time_unit == "samples" else 0
    if time_unit == "samples" and times.dtype.kind in "iu":
        times = times.astype(np.int64, copy=False)
    times_ms = unit_to_ms(times - offset if offset else times, time_unit, fs)
    del times

    table = _read_cluster_table(folder)
    ids = [int(r["cluster_id"]) for r in table]
    if len(set(ids)) != len(ids):
        raise LoadError(f"{folder}: the cluster table lists a cluster_id more than once")
    unit_of_spike, extra = _unit_of_spike(clusters, ids)
    del clusters
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
            if isinstance(group, str) and group != _label(a, ("group", "quality"), "unsorted"):
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


def _finite(value: Any, what: str, folder: Path) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        out = math.nan
    if not math.isfinite(out):
        raise LoadError(f"{folder}: {what} must be a finite number of ms, got {value!r}")
    return out


def _read_params(path: Path) -> dict[str, Any]:
    """Literal assignments of a params.py (names lower-cased), parsed without executing it."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (SyntaxError, ValueError, UnicodeDecodeError) as exc:
        raise LoadError(f"{path}: not a readable params.py ({exc})") from None
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
    if not path.is_file():
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            side = json.load(fh)
    except (OSError, ValueError) as exc:
        raise LoadError(f"{path}: not readable JSON ({exc})") from None
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
    path = folder / name
    if not path.is_file():
        raise LoadError(f"{folder}: {what} file {name} is missing")
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise LoadError(f"{path}: not a readable .npy file ({exc})") from None
    if arr.ndim == 2 and 1 in arr.shape:  # KiloSort writes (n, 1) columns
        arr = arr.reshape(-1)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise LoadError(f"{path}: expected one value per spike, got shape {arr.shape}")
    return arr


def _as_ids(values: np.ndarray, path: Path) -> np.ndarray:
    if values.dtype.kind == "f":
        if not np.all(np.isfinite(values) & (values == np.round(values))):
            raise LoadError(f"{path}: cluster ids must be integers")
    elif values.dtype.kind not in "iu":
        raise LoadError(f"{path}: cluster ids must be integers, got dtype {values.dtype}")
    return values.astype(np.int64, copy=False)


def _read_cluster_table(folder: Path) -> list[dict[str, Any]]:
    """Rows of cluster_info.tsv (else cluster_group.tsv) with numbers converted, in file order."""
    for name in ("cluster_info.tsv", "cluster_group.tsv"):
        path = folder / name
        if path.is_file():
            break
    else:
        return []
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            first = fh.readline()
            fh.seek(0)
            rows = list(csv.DictReader(fh, delimiter="\t" if "\t" in first else ","))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise LoadError(f"{path}: not a readable table ({exc})") from None
    out = []
    for line, row in enumerate(rows, start=2):
        row = {k: _cell(v) for k, v in row.items() if k is not None and v not in (None, "")}
        if "cluster_id" not in row and "id" in row:
            row["cluster_id"] = row["id"]
        cid = row.get("cluster_id")
        if isinstance(cid, float) and cid.is_integer():
            cid = row["cluster_id"] = int(cid)
        if not isinstance(cid, int):
            raise LoadError(f"{path}: line {line} has no integer cluster_id ({cid!r})")
        out.append(row)
    return out


def _cell(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"True": True, "False": False}.get(text, text)
