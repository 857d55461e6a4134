"""Write SpikeData (times in ms) to an HDF5 file in one of four styles (see
:mod:`spikelab.formats.hdf5`)."""

from __future__ import annotations

import json
import math
import os
import warnings
from typing import Any

import numpy as np

from spikelab.formats.atomic import atomic_file, write_errors
from spikelab.formats.errors import ExportError
from spikelab.formats.hdf5 import layout
from spikelab.formats.hdf5.layout import HDF5_STYLES, RASTER_MAX_CELLS
from spikelab.formats.metadata import json_safe
from spikelab.formats.streaming import (
    convert_pieces,
    unit_index_blocks,
    write_hdf5_block,
    write_hdf5_times,
)
from spikelab.formats.time_units import (
    check_samples_fit,
    check_time_unit,
    check_times_fit,
    ms_to_unit,
)
from spikelab.spikedata.spikedata import SpikeData

__all__ = ["export_spikedata_to_hdf5"]


def _check_name(name: Any, what: str) -> str:
    if not isinstance(name, str) or not name.strip("/"):
        raise ExportError(f"{what} must be a non-empty HDF5 name, got {name!r}")
    return name


def _check_bin_size(raster_bin_size_ms: Any) -> float:
    try:
        b = float(raster_bin_size_ms)
    except (TypeError, ValueError):
        raise ExportError(
            f"style 'raster' needs raster_bin_size_ms > 0 (ms), got {raster_bin_size_ms!r}"
        ) from None
    if not np.isfinite(b) or b <= 0:
        raise ExportError(
            f"raster_bin_size_ms must be a finite bin width > 0 ms, got {raster_bin_size_ms!r}"
        )
    return b


def _check_raw_time(sd: SpikeData) -> None:
    """ExportError unless ``sd.raw_time`` holds one time (ms) per sample of ``sd.raw_data``
    (an attribute set by hand may be None or of another length)."""
    samples = np.shape(sd.raw_data)[-1]
    if sd.raw_time is None:
        raise ExportError(
            f"raw_time_dataset asked for and the recording has raw_data ({samples} samples), "
            "but its raw_time is None: set raw_time (ms, one per sample) or leave "
            "raw_time_dataset None"
        )
    if np.size(sd.raw_time) != samples:
        raise ExportError(
            f"raw_time has {np.size(sd.raw_time)} times but raw_data has {samples} samples"
        )


def _count_dtype(max_count: int) -> np.dtype:
    for dt in (np.uint8, np.uint16, np.uint32):
        if max_count <= np.iinfo(dt).max:
            return np.dtype(dt)
    return np.dtype(np.uint64)


def _unit_bins(train: np.ndarray, start_time: float, bin_ms: float, n_bins: int) -> np.ndarray:
    """Bin index (int64) of every spike, clipped to ``0..n_bins-1`` before the integer cast
    (a time far outside the recording goes to the edge bin, never wraps)."""
    b = np.floor((train - start_time) / bin_ms)
    np.clip(b, 0, n_bins - 1, out=b)
    return b.astype(np.int64)


def _raster_shape(sd: SpikeData, bin_ms: float, max_cells: int) -> int:
    """Bins per unit of the raster (as ``sd.n_bins``, except 0 for a recording of length 0
    without spikes, as SpikeLab writes), or ExportError when ``N x bins`` exceeds
    ``max_cells``."""
    length = float(sd.length)
    if length == 0 and not any(t.size for t in sd.train):
        return 0
    bins = length / bin_ms if length > 0 else 1.0
    n_bins = max(1, math.ceil(bins)) if math.isfinite(bins) else math.inf
    cells = max(sd.N, 1) * n_bins  # an empty raster still has its bins
    if cells > max_cells:
        raise ExportError(
            f"raster of length {length:g} ms / bin {bin_ms:g} ms = {n_bins:,} bins per unit x "
            f"{sd.N} units = {cells:,} cells exceeds raster_max_cells={max_cells:,} (a dense "
            "count matrix that size takes as many bytes of disk and minutes of writing); use a "
            "wider raster_bin_size_ms, another style, or pass a larger raster_max_cells"
        )
    return n_bins


def _max_bin_count(bins: np.ndarray) -> int:
    if bins.size == 0:
        return 0
    edges = np.flatnonzero(np.diff(bins)) + 1
    runs = np.diff(np.concatenate(([0], edges, [bins.size])))
    return int(runs.max())


def _set_time_unit(dset, unit, fs_Hz):
    dset.attrs["unit"] = unit
    if unit == "samples":
        dset.attrs["fs_Hz"] = fs_Hz
    return dset


def _write_time_dataset(parent, name, data, unit, fs_Hz):
    return _set_time_unit(parent.create_dataset(name, data=data), unit, fs_Hz)


def _write_flat_times(parent, name, trains, n: int, unit: str, fs_Hz):
    """Dataset ``name``: all ``n`` spike times, unit-major, in ``unit`` (float64, or int64
    samples), converted and written block by block (no full-size temporary)."""
    dtype = np.int64 if unit == "samples" else np.float64
    dset = parent.create_dataset(name, shape=(n,), dtype=dtype)
    write_hdf5_times(dset, trains, unit, fs_Hz)
    return _set_time_unit(dset, unit, fs_Hz)


def _write_unit_index(parent, name, trains, n: int):
    """Dataset ``name``: the unit index (int64) of each of the ``n`` spikes, unit-major,
    written block by block."""
    dset = parent.create_dataset(name, shape=(n,), dtype=np.int64)
    for start, index in unit_index_blocks(trains):
        write_hdf5_block(dset, start, index)
    return dset


def _attribute_writer(name: str, value: Any):
    """A function setting attribute ``name`` = ``value`` (str or number) on a low-level object
    id, exactly as ``obj.attrs[name] = value`` does, with the types made once."""
    from h5py import h5a, h5s, h5t, string_dtype

    data = np.asarray(value, dtype=string_dtype() if isinstance(value, str) else None)
    htype, mtype = h5t.py_create(data.dtype, logical=True), h5t.py_create(data.dtype)
    space, key = h5s.create_simple(()), name.encode()

    def write(obj_id) -> None:
        attr = h5a.create(obj_id, key, htype, space)
        attr.write(data, mtype=mtype)
        attr.close()

    return write


def _write_unit_datasets(grp, trains, unit: str, fs_Hz) -> None:
    """One dataset per unit in ``grp``, named by unit index, times in ``unit``.

    Made with h5py's low-level API: the file is byte-identical to ``create_dataset(data=...)``
    plus ``attrs[...] =`` per unit, without their Python overhead (~0.1 ms per unit).
    """
    from h5py import h5d, h5p, h5s, h5t

    dtype = np.dtype(np.int64 if unit == "samples" else np.float64)
    tid = h5t.py_create(dtype, logical=1)
    dcpl = h5p.create(h5p.DATASET_CREATE)
    dcpl.set_obj_track_times(False)  # h5py's defaults
    dcpl.set_attr_creation_order(0)
    attrs = [_attribute_writer("unit", unit)]
    if unit == "samples":
        attrs.append(_attribute_writer("fs_Hz", fs_Hz))
    longest = max((len(t) for t in trains), default=0)
    buf = np.empty(longest, dtype=np.float64)
    ints = np.empty(longest if unit == "samples" else 0, dtype=np.int64)
    for i, train in enumerate(trains):
        values = convert_pieces([train], unit, fs_Hz, buf, ints)
        space = h5s.create_simple(values.shape)
        dset = h5d.create(grp.id, str(i).encode(), tid, space, dcpl=dcpl)
        dset.write(h5s.ALL, h5s.ALL, values)
        for write_attr in attrs:
            write_attr(dset)


def _raster_dtype(sd: SpikeData, bin_ms: float, n_bins: int, dtype) -> np.dtype:
    """The count dtype: ``dtype``, or the narrowest that holds the largest count. A first pass
    finds the largest count, keeping nothing; a given dtype too narrow is an ExportError."""
    largest = max(
        (_max_bin_count(_unit_bins(t, sd.start_time, bin_ms, n_bins)) for t in sd.train),
        default=0,
    )
    if dtype is None:
        return _count_dtype(largest)
    dtype = np.dtype(dtype)
    if largest > np.iinfo(dtype).max:
        raise ExportError(
            f"raster_dtype {dtype} holds counts up to {np.iinfo(dtype).max}, but a bin of "
            f"{bin_ms:g} ms holds {largest} spikes; pass a wider raster_dtype or None"
        )
    return dtype


def _write_raster(
    f, sd: SpikeData, name: str, bin_ms: float, n_bins: int, dtype, compression, compression_opts
) -> None:
    def bins_of(unit: int) -> np.ndarray:
        return _unit_bins(sd.train[unit], sd.start_time, bin_ms, n_bins)

    dtype = np.dtype(dtype)
    rows_per_block = max(1, min(sd.N, layout.RASTER_BLOCK_BYTES // max(1, n_bins * dtype.itemsize)))
    chunk_rows = max(1, min(rows_per_block, 64, sd.N))
    chunk_cols = max(1, min(n_bins, (1 << 20) // (chunk_rows * dtype.itemsize)))
    cells = sd.N * n_bins  # an empty raster is neither chunked nor compressed
    dset = f.create_dataset(
        name,
        shape=(sd.N, n_bins),
        dtype=dtype,
        chunks=(chunk_rows, chunk_cols) if cells else None,
        compression=compression if cells else None,
        compression_opts=compression_opts if cells and compression else None,
        shuffle=bool(compression) and dtype.itemsize > 1 and cells > 0,
    )
    rows_per_block = max(chunk_rows, rows_per_block // chunk_rows * chunk_rows)
    cols = n_bins  # a row longer than a block is written in column blocks of whole chunks
    if n_bins * dtype.itemsize > layout.RASTER_BLOCK_BYTES:
        cols = max(
            chunk_cols, layout.RASTER_BLOCK_BYTES // dtype.itemsize // chunk_cols * chunk_cols
        )
    for u0 in range(0, sd.N if n_bins else 0, rows_per_block):
        u1 = min(sd.N, u0 + rows_per_block)
        if cols == n_bins:  # whole rows (the bins are dropped as soon as they are merged)
            _write_raster_block(dset, u0, 0, [bins_of(i) for i in range(u0, u1)], n_bins, dtype)
            continue
        bins = [bins_of(i) for i in range(u0, u1)]
        for c0 in range(0, n_bins, cols):
            c1 = min(n_bins, c0 + cols)
            parts = [b[np.searchsorted(b, c0) : np.searchsorted(b, c1)] - c0 for b in bins]
            _write_raster_block(dset, u0, c0, parts, c1 - c0, dtype)
        del bins
    dset.attrs["bin_size_ms"] = bin_ms
    dset.attrs["start_time"] = sd.start_time
    dset.attrs["unit"] = "count"


def _write_raster_block(dset, u0: int, c0: int, bins: list[np.ndarray], width: int, dtype):
    """``dset[u0:u0+len(bins), c0:c0+width]`` = the counts of the sorted bin indices ``bins``
    (one array per row, relative to ``c0``)."""
    block = np.zeros((len(bins), width), dtype=dtype)
    counts = np.fromiter((b.size for b in bins), dtype=np.int64, count=len(bins))
    if counts.sum():
        keys = np.concatenate(bins)
        bins.clear()  # the caller's list too: its arrays are freed before the merge below
        keys += np.repeat(np.arange(len(counts), dtype=np.int64) * width, counts)
        starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
        block.reshape(-1)[keys[starts]] = np.diff(np.append(starts, keys.size))
        del keys, starts
    dset[u0 : u0 + block.shape[0], c0 : c0 + width] = block


def export_spikedata_to_hdf5(
    sd: SpikeData,
    filepath: str | os.PathLike,
    *,
    style: str = "ragged",
    raster_dataset: str = "raster",
    raster_bin_size_ms: float | None = None,
    spike_times_dataset: str = "spike_times",
    spike_times_index_dataset: str = "spike_times_index",
    spike_times_unit: str = "s",
    fs_Hz: float | None = None,
    group_per_unit: str = "units",
    group_time_unit: str = "s",
    idces_dataset: str = "idces",
    times_dataset: str = "times",
    times_unit: str = "ms",
    raw_dataset: str | None = None,
    raw_time_dataset: str | None = None,
    raw_time_unit: str = "ms",
    raster_dtype: Any = None,
    raster_compression: str | None = "gzip",
    raster_compression_opts: Any = 4,
    raster_max_cells: int = RASTER_MAX_CELLS,
) -> None:
    """Write ``sd`` (times in ms) to an HDF5 file in one of four styles.

    Parameters
    ----------
    style : {"ragged", "raster", "group", "paired"}, case-insensitive.
    raster_bin_size_ms : bin width (ms); required for ``raster``.
    spike_times_unit, group_time_unit, times_unit, raw_time_unit : "ms", "s" or "samples".
    fs_Hz : sampling rate (Hz); required when a unit is "samples" (times rounded to nearest).
    raw_dataset, raw_time_dataset : names for ``sd.raw_data`` (channels x samples) and
        ``sd.raw_time``; skipped with a warning when the recording has no raw data.
    raster_dtype : count dtype; default the narrowest unsigned integer that holds the counts.
    raster_compression, raster_compression_opts : h5py filter for the raster (default gzip 4;
        ``None`` for an uncompressed raster).
    raster_max_cells : the largest raster (units x bins) written, default 2**36 (68.7e9 cells:
        1000 units x 19 h in 1 ms bins, ~10 min of writing at the ~125e6 cells/s measured);
        a larger one (e.g. a recording of 1e12 ms) raises ExportError before any file is
        created. Memory stays bounded (~32 MB blocks) whatever the size.

    Times in samples must be int64 sample indices: a spike (or raw time) whose
    ``rint(t * fs_Hz / 1000)`` falls outside ``-2**63..2**63-1`` raises ExportError naming the
    unit, the time and fs before any file is created (numpy would silently write INT64_MIN).

    All arguments are checked before the file is created; the file is written to a temporary
    name and renamed into place, so an existing file is replaced only on success.
    """
    if not isinstance(sd, SpikeData):
        raise ExportError(f"expected a SpikeData, got {type(sd).__name__}")
    if not isinstance(style, str) or style.lower() not in HDF5_STYLES:
        raise ExportError(
            f"Unknown style {style!r} (unknown HDF5 style; choose one of {', '.join(HDF5_STYLES)})"
        )
    style = style.lower()
    if style == "raster":
        bin_ms = _check_bin_size(raster_bin_size_ms)
        _check_name(raster_dataset, "raster_dataset")
        if raster_dtype is not None:
            try:
                dt = np.dtype(raster_dtype)
            except TypeError:
                raise ExportError(f"raster_dtype {raster_dtype!r} is not a dtype") from None
            if dt.kind not in "iu":
                raise ExportError(f"raster_dtype must be an integer dtype, got {dt}")
        if raster_compression not in (None, "gzip", "lzf"):
            raise ExportError(
                f"raster_compression must be 'gzip', 'lzf' or None, got {raster_compression!r}"
            )
        if (
            isinstance(raster_max_cells, bool)
            or not isinstance(raster_max_cells, int | np.integer)
            or raster_max_cells < 1
        ):
            raise ExportError(
                f"raster_max_cells must be a positive integer, got {raster_max_cells!r}"
            )
        fs = None if fs_Hz is None else check_time_unit("ms", fs_Hz)
        n_bins = _raster_shape(sd, bin_ms, int(raster_max_cells))
        count_dtype = _raster_dtype(sd, bin_ms, n_bins, raster_dtype)
    else:
        if style == "ragged":
            _check_name(spike_times_dataset, "spike_times_dataset")
            _check_name(spike_times_index_dataset, "spike_times_index_dataset")
            if spike_times_dataset == spike_times_index_dataset:
                raise ExportError("spike_times_dataset and spike_times_index_dataset must differ")
            unit_key, unit = "spike_times_unit", spike_times_unit
        elif style == "group":
            _check_name(group_per_unit, "group_per_unit")
            unit_key, unit = "group_time_unit", group_time_unit
        else:
            _check_name(idces_dataset, "idces_dataset")
            _check_name(times_dataset, "times_dataset")
            if idces_dataset == times_dataset:
                raise ExportError("idces_dataset and times_dataset must differ")
            unit_key, unit = "times_unit", times_unit
        fs = check_time_unit(unit, fs_Hz, what=unit_key)
        if unit == "samples":
            check_samples_fit(sd.train, fs, what=unit_key)
    write_raw = raw_dataset is not None
    if write_raw:
        _check_name(raw_dataset, "raw_dataset")
        if raw_time_dataset is not None:
            _check_name(raw_time_dataset, "raw_time_dataset")
            raw_fs = check_time_unit(raw_time_unit, fs_Hz, what="raw_time_unit")
        if sd.raw_data is None or np.size(sd.raw_data) == 0:
            warnings.warn(
                f"{os.fspath(filepath)}: raw_dataset={raw_dataset!r} asked for, but the "
                "recording has no raw_data; no raw traces written",
                stacklevel=2,
            )
            write_raw = False
        elif raw_time_dataset is not None:
            _check_raw_time(sd)
            if raw_time_unit == "samples":
                check_times_fit(sd.raw_time, raw_fs, what="raw_time_unit", where="raw_time")
    elif raw_time_dataset is not None:
        raise ExportError("raw_time_dataset needs raw_dataset as well")

    import h5py

    with atomic_file(filepath) as tmp, write_errors(filepath), h5py.File(tmp, "w") as f:
        f.attrs["start_time"] = sd.start_time
        f.attrs["length_ms"] = sd.length
        f.attrs["N"] = sd.N
        f.attrs["spikelab_style"] = style
        f.attrs["metadata_json"] = json.dumps(json_safe(sd.metadata))
        if sd.neuron_attributes is not None:
            f.attrs["neuron_attributes_json"] = json.dumps(json_safe(sd.neuron_attributes))
        counts = np.fromiter((t.size for t in sd.train), dtype=np.int64, count=sd.N)
        n = int(counts.sum())
        if style == "ragged":
            _write_flat_times(f, spike_times_dataset, sd.train, n, spike_times_unit, fs)
            f.create_dataset(spike_times_index_dataset, data=np.cumsum(counts))
            f.attrs["spike_times_dataset"] = spike_times_dataset
            f.attrs["spike_times_index_dataset"] = spike_times_index_dataset
        elif style == "paired":
            _write_flat_times(f, times_dataset, sd.train, n, times_unit, fs)
            idces = _write_unit_index(f, idces_dataset, sd.train, n)
            idces.attrs["order"] = "unit-major, time-sorted within unit"
            f.attrs["idces_dataset"] = idces_dataset
            f.attrs["times_dataset"] = times_dataset
        elif style == "group":
            grp = f.create_group(group_per_unit)
            _write_unit_datasets(grp, sd.train, group_time_unit, fs)
            f.attrs["group_per_unit"] = group_per_unit
        else:
            _write_raster(
                f,
                sd,
                raster_dataset,
                bin_ms,
                n_bins,
                count_dtype,
                raster_compression,
                raster_compression_opts,
            )
            f.attrs["raster_dataset"] = raster_dataset
            if fs is not None:
                f.attrs["fs_Hz"] = fs
        if write_raw:
            f.create_dataset(raw_dataset, data=sd.raw_data)
            f.attrs["raw_dataset"] = raw_dataset
            if raw_time_dataset is not None:
                _write_time_dataset(
                    f,
                    raw_time_dataset,
                    ms_to_unit(sd.raw_time, raw_time_unit, raw_fs),
                    raw_time_unit,
                    raw_fs,
                )
                f.attrs["raw_time_dataset"] = raw_time_dataset
