"""Write SpikeData (times in ms) as a KiloSort/Phy folder that phylib and SpikeInterface open.

A folder written by :func:`export_spikedata_to_kilosort` holds

* ``spike_times.npy`` - every spike: in int64 samples (the default, what Phy reads) sorted in
  time across units; in float64 ms or s (SpikeLab 0.1.2's own layout, which Phy does not
  read) unit by unit, as SpikeLab writes them;
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

import contextlib
import csv
import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from spikelab.formats.atomic import atomic_directory
from spikelab.formats.errors import ExportError, OutputInTheWayError
from spikelab.formats.kilosort.layout import FIXED_FILES, RESERVED_COLUMNS, SIDE_FILE, label
from spikelab.formats.metadata import json_safe
from spikelab.formats.streaming import converted_blocks, unit_index_blocks
from spikelab.formats.time_order import ascending_trains, time_ordered
from spikelab.formats.time_units import (
    TIME_UNITS,
    check_fs,
    check_samples_fit,
    check_time_unit,
    check_times_fit,
)

__all__ = ["export_spikedata_to_kilosort", "FolderInTheWayError"]

_MAX_CLUSTER_ID = 2**31 - 1  # phylib holds cluster ids as int32
_CHUNK = 1 << 20  # spikes per chunk when writing constant or derived columns


class FolderInTheWayError(OutputInTheWayError, FileExistsError):
    """A file stands where the output folder goes (it is left alone): an
    :class:`OutputInTheWayError` that is also the ``FileExistsError`` SpikeLab 0.1.2 raises."""


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
        Output folder; replaced atomically (a file in its place raises
        FolderInTheWayError: an ExportError and a FileExistsError).
    fs_Hz : float
        Sampling rate (Hz) used for samples and written as ``sample_rate`` in params.py.
    spike_times_file, spike_clusters_file : str
        File names (inside ``folder``) of the spike times and cluster ids.
    time_unit : {"samples", "ms", "s"}
        Unit of ``spike_times_file``: int64 samples at ``fs_Hz`` (what Phy and SpikeInterface
        expect), sorted in time across units; or float64 ms or s, unit by unit (SpikeLab
        0.1.2's layout; Phy reads samples only). For samples with a negative ``start_time``
        every sample is shifted by ``round(-start_time * fs_Hz / 1000)`` so none is negative;
        the shift is recorded in ``spikelab.json`` as ``sample_offset``. Every shifted sample
        index must be an int64 (a spike at 1e18 ms at 20 kHz is not): otherwise ExportError
        naming the unit, the time and fs, before the folder is created. The length of the
        recording is kept in ms (``spikelab.json``) and is not limited.
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

    Channels are the distinct ``sd.electrodes`` in the order of the first unit on each
    (channel_map holds the electrode numbers, one per channel, so with one electrode per unit
    it lists them unit by unit as SpikeLab 0.1.2 does; channel_positions holds the x, y
    location (um) of the first unit on each). When electrodes are
    unknown (or negative) a single dummy channel 0 at (0, 0) is written, since phylib needs
    at least one. A ``start_time`` other than 0 ms warns (Phy has no start time); raw data
    is not written. Returns the paths of the spike times and spike clusters files.
    """
    fs = check_fs(fs_Hz)
    if time_unit not in TIME_UNITS:
        raise ExportError(
            f"time_unit must be one of {', '.join(TIME_UNITS)} (the time unit of "
            f"spike_times_file); got {time_unit!r}"
        )
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
        raise FolderInTheWayError(f"{folder}: a file is in the way of the output folder")

    start_ms, length_ms = float(sd.start_time), float(sd.length)
    offset = 0
    trains = ascending_trains(trains)
    if time_unit == "samples":  # every sample index, shifted, must be an int64
        if start_ms < 0:
            check_times_fit([start_ms], fs, what="time_unit", where="start_time")
            offset = -int(np.rint(start_ms * (fs / 1000.0)))
            if offset >= 2**63:  # start_time is sample -2**63 exactly
                raise ExportError(
                    f"start_time {start_ms!r} ms is sample -2**63 at fs_Hz={fs:g} Hz: the shift "
                    "to sample 0 leaves int64; write time_unit 'ms' or 's'"
                )
        check_samples_fit(trains, fs, what="time_unit", offset=offset, ascending=True)
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
    if name in FIXED_FILES:
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
    uniq, first_unit, inverse = np.unique(electrodes, return_index=True, return_inverse=True)
    order = np.argsort(first_unit)  # channels in the order their first unit comes
    chan_map, first_unit = uniq[order], first_unit[order]
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    unit_chan = rank[inverse.reshape(-1)]
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
    """Write times, clusters, templates and amplitudes, streamed block by block (no array of
    all spikes is held): in global time order for samples (Phy requires it), unit by unit for
    ms and s (SpikeLab 0.1.2's order for them)."""
    n = int(counts.sum())
    same_ids = np.array_equal(ids, np.arange(len(trains)))
    ids32 = ids.astype(np.int32)
    time_dtype = np.int64 if unit == "samples" else np.float64
    with contextlib.ExitStack() as files:
        times_out = files.enter_context(_NpyWriter(tmp / times_name, time_dtype, n))
        templates_out = files.enter_context(_NpyWriter(tmp / "spike_templates.npy", np.int32, n))
        clusters_out = files.enter_context(_NpyWriter(tmp / clusters_name, np.int32, n))
        if unit == "samples":
            blocks = time_ordered(trains, n, unit, fs, offset, ascending=True)
        else:
            blocks = _unit_major(trains, unit)
        for times, index in blocks:
            times_out.write(times)
            templates_out.write(index)
            clusters_out.write(index if same_ids else ids32[index])
    _save_constant(tmp / "amplitudes.npy", 1.0, n)
    return n


def _unit_major(trains: list[np.ndarray], unit: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(times in ``unit``, int32 unit index) of every spike of the (ascending) ``trains``,
    unit by unit, block by block (views of reused buffers)."""
    times = converted_blocks(trains, unit)
    for (_, values), (_, index) in zip(times, unit_index_blocks(trains), strict=True):
        yield values, index.astype(np.int32)


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


def _write_cluster_tables(
    tmp: Path, ids: np.ndarray, attrs: Any, unit_chan: np.ndarray, counts: np.ndarray
) -> None:
    """cluster_group.tsv (cluster_id, group) and cluster_info.tsv (one row per unit)."""
    n_units = ids.size
    attrs = list(attrs) if attrs else [{} for _ in range(n_units)]
    groups = [label(a, ("group", "quality"), "unsorted") for a in attrs]
    ks = [label(a, ("KSLabel",), None) for a in attrs]
    extra: dict[str, list[str]] = {}
    for i, a in enumerate(attrs):
        for key, value in a.items():
            if not isinstance(key, str) or not key or key in RESERVED_COLUMNS:
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
