"""HDF5 export and import of SpikeData in four layouts (styles).

``ragged``  flat ``spike_times`` (all units, unit-major) + ``spike_times_index`` holding the
            cumulative end of each unit (NWB's VectorIndex convention), times in
            ``spike_times_unit``.
``raster``  ``(N, T)`` spike counts per ``raster_bin_size_ms`` bin from ``start_time``; written
            in row blocks from the sparse spike times (the dense matrix is never built),
            chunked and compressed, with the narrowest unsigned count dtype that fits.
``group``   a group ``group_per_unit`` with one dataset per unit, named by the unit index
            (``"0"``, ``"1"``, ... ; loaders sort them numerically), times in ``group_time_unit``.
``paired``  parallel ``idces`` (unit index) and ``times`` (in ``times_unit``), unit-major.

Every file carries the attributes ``start_time`` (ms), ``length_ms``, ``N``,
``spikelab_style`` and, as JSON strings, ``metadata_json`` and ``neuron_attributes_json``;
every time dataset carries ``unit`` (and ``fs_Hz`` for samples).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from typing import Any

import numpy as np

from spikelab.formats.atomic import atomic_file, write_errors
from spikelab.formats.errors import ExportError, LoadError, OptionError, spikedata_or_load_error
from spikelab.formats.files import (
    MAX_EXPANSION,
    MAX_UNITS,
    check_unit_count,
    loader_boundary,
    parse_json,
)
from spikelab.formats.metadata import json_safe
from spikelab.formats.registry import Format, ResourceModel, pick
from spikelab.formats.streaming import (
    convert_pieces,
    unit_index_blocks,
    write_hdf5_block,
    write_hdf5_times,
)
from spikelab.formats.strict_hdf5 import open_hdf5
from spikelab.formats.time_units import (
    TIME_UNITS,
    check_samples_fit,
    check_time_unit,
    check_times_fit,
    clip_to_recording,
    ms_to_unit,
    unit_to_ms,
)
from spikelab.spikedata.spikedata import SpikeData

__all__ = [
    "export_spikedata_to_hdf5",
    "load_spikedata_from_hdf5",
    "HDF5_STYLES",
    "RASTER_MAX_CELLS",
    "STYLE_KEYS",
    "FORMAT",
]

HDF5_STYLES = ("ragged", "raster", "group", "paired")
#: Default of ``raster_max_cells``: the largest raster (units x bins) the exporter writes.
RASTER_MAX_CELLS = 1 << 36
_RASTER_ROWS_PER_BLOCK_BYTES = 32 * 1024 * 1024  # dense bytes per row block while writing


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
    """Bins per unit of the raster (as ``sd.n_bins``), or ExportError when ``N x bins``
    exceeds ``max_cells``."""
    length = float(sd.length)
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
    rows_per_block = max(1, min(sd.N, _RASTER_ROWS_PER_BLOCK_BYTES // (n_bins * dtype.itemsize)))
    chunk_rows = max(1, min(rows_per_block, 64, sd.N))
    chunk_cols = max(1, min(n_bins, (1 << 20) // (chunk_rows * dtype.itemsize)))
    dset = f.create_dataset(
        name,
        shape=(sd.N, n_bins),
        dtype=dtype,
        chunks=(chunk_rows, chunk_cols) if sd.N else None,
        compression=compression if sd.N else None,
        compression_opts=compression_opts if sd.N and compression else None,
        shuffle=bool(compression) and dtype.itemsize > 1 and sd.N > 0,
    )
    rows_per_block = max(chunk_rows, rows_per_block // chunk_rows * chunk_rows)
    cols = n_bins  # a row longer than a block is written in column blocks of whole chunks
    if n_bins * dtype.itemsize > _RASTER_ROWS_PER_BLOCK_BYTES:
        cols = max(
            chunk_cols, _RASTER_ROWS_PER_BLOCK_BYTES // dtype.itemsize // chunk_cols * chunk_cols
        )
    for u0 in range(0, sd.N, rows_per_block):
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
        raise ExportError(f"unknown HDF5 style {style!r}; choose one of {', '.join(HDF5_STYLES)}")
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
        if sd.raw_data.size == 0:
            warnings.warn(
                f"{os.fspath(filepath)}: raw_dataset={raw_dataset!r} asked for, but the "
                "recording has no raw_data; no raw traces written",
                stacklevel=2,
            )
            write_raw = False
        elif raw_time_dataset is not None and raw_time_unit == "samples":
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


# --------------------------------------------------------------------------- loading


def _resolve_unit(h5, dset, given: str | None, default: str, fs_Hz, name) -> tuple[str, Any]:
    path = h5.source
    stored = h5.text_attr(dset, "unit")
    if given is not None and stored is not None and given != stored:
        raise LoadError(
            f"{path}: dataset {name!r} stores times in {stored!r} but {given!r} was asked for"
        )
    unit = given or stored or default
    if unit not in TIME_UNITS:
        raise LoadError(
            f"{path}: dataset {name!r}: unknown time unit {unit!r}; expected one of "
            f"{', '.join(TIME_UNITS)}"
        )
    fs = fs_Hz if fs_Hz is not None else h5.number_attr(dset, "fs_Hz", unit="Hz", positive=True)
    if unit == "samples" and fs is None:
        raise LoadError(f"{path}: dataset {name!r} holds samples; pass fs_Hz (Hz)")
    return unit, fs


def _read_times(h5, name, given, default, fs_Hz) -> np.ndarray:
    """The times of dataset ``name`` in ms (its unit from ``given``, its attribute or
    ``default``)."""
    dset = h5.dataset(name)
    unit, fs = _resolve_unit(h5, dset, given, default, fs_Hz, name)
    return unit_to_ms(h5.read(dset, name), unit, fs).reshape(-1)


def _read_index(h5, name) -> np.ndarray:
    """Dataset ``name`` (unit indices or cumulative ends) as int64."""
    values = np.asarray(h5.read(h5.dataset(name), name)).reshape(-1)
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise LoadError(f"{h5.source}: {name!r} holds non-finite values where integers belong")
    return values.astype(np.int64)


def load_spikedata_from_hdf5(
    filepath: str | os.PathLike,
    *,
    raster_dataset: str | None = None,
    raster_bin_size_ms: float | None = None,
    spike_times_dataset: str | None = None,
    spike_times_index_dataset: str | None = None,
    spike_times_unit: str | None = None,
    fs_Hz: float | None = None,
    group_per_unit: str | None = None,
    group_time_unit: str | None = None,
    idces_dataset: str | None = None,
    times_dataset: str | None = None,
    times_unit: str | None = None,
    raw_dataset: str | None = None,
    raw_time_dataset: str | None = None,
    raw_time_unit: str | None = None,
    length_ms: float | None = None,
    start_time_ms: float | None = None,
) -> SpikeData:
    """Read SpikeData (times in ms) from an HDF5 file written in any of the four styles.

    The style is chosen by which dataset/group names are given (``raster_dataset``;
    ``spike_times_dataset`` + ``spike_times_index_dataset``; ``group_per_unit``;
    ``idces_dataset`` + ``times_dataset``); with none given, by the file's ``spikelab_style``.
    A unit left as None is read from the dataset's ``unit`` attribute, else it takes the
    exporter's default (s for ragged and group, ms for paired and raw time); a unit given
    that contradicts the file's attribute is an error. ``fs_Hz`` (Hz) is needed for samples
    unless the file records it. ``length_ms``/``start_time_ms`` override the file's values.
    Raster files give each spike the left edge of its bin.

    The file is untrusted (see :mod:`~spikelab.formats.strict_hdf5`): only a regular file is
    opened; external links, external raw storage and virtual datasets are refused before any
    data is read; no dataset is read whose declared size the file cannot hold (1032:1 for
    compressed data); at most 2**20 units, and a raster decodes to at most 129 spikes per byte
    of file plus 2**27 spikes. A missing file raises FileNotFoundError; any other fault of the
    file, a LoadError naming the file (and the dataset or attribute).
    """
    path = os.fspath(filepath)
    asked = {
        "raster": raster_dataset is not None,
        "ragged": spike_times_dataset is not None or spike_times_index_dataset is not None,
        "group": group_per_unit is not None,
        "paired": idces_dataset is not None or times_dataset is not None,
    }
    chosen = [s for s, a in asked.items() if a]
    if len(chosen) > 1:
        raise LoadError(f"{path}: arguments for several styles given ({', '.join(chosen)})")
    with loader_boundary(path, passthrough=(FileNotFoundError,)), open_hdf5(path, path) as h5:
        f = h5.f
        style = chosen[0] if chosen else h5.text_attr(f, "spikelab_style")
        if style not in HDF5_STYLES:
            raise LoadError(
                f"{path}: cannot tell the layout; pass the dataset names of one style "
                "(raster_dataset, spike_times_dataset, group_per_unit or idces_dataset)"
            )
        if start_time_ms is None:
            start = h5.number_attr(f, "start_time", 0.0, unit="ms")
        else:
            start = start_time_ms
        if style == "ragged":
            st_name = spike_times_dataset or h5.text_attr(f, "spike_times_dataset") or "spike_times"
            ix_name = (
                spike_times_index_dataset
                or h5.text_attr(f, "spike_times_index_dataset")
                or "spike_times_index"
            )
            flat = _read_times(h5, st_name, spike_times_unit, "s", fs_Hz)
            ends = _read_index(h5, ix_name)
            check_unit_count(ends.size, path, f"{ix_name!r}")
            if ends.size and (np.any(np.diff(ends) < 0) or ends[-1] != flat.size or ends[0] < 0):
                raise LoadError(
                    f"{path}: {ix_name!r} is not a cumulative index into {st_name!r} "
                    f"({flat.size} spikes)"
                )
            train = np.split(flat, ends[:-1]) if ends.size else []
        elif style == "paired":
            t_name = times_dataset or h5.text_attr(f, "times_dataset") or "times"
            i_name = idces_dataset or h5.text_attr(f, "idces_dataset") or "idces"
            times = _read_times(h5, t_name, times_unit, "ms", fs_Hz)
            idces = _read_index(h5, i_name)
            if idces.shape != times.shape:
                raise LoadError(f"{path}: {i_name!r} and {t_name!r} differ in length")
            if idces.size and idces.min() < 0:
                raise LoadError(f"{path}: {i_name!r} holds negative unit indices")
            if idces.size and idces.max() >= MAX_UNITS:
                check_unit_count(int(idces.max()) + 1, path, f"unit index {int(idces.max())}")
            n = h5.number_attr(
                f,
                "N",
                int(idces.max()) + 1 if idces.size else 0,
                integer=True,
                minimum=0,
                maximum=MAX_UNITS,
            )
            if idces.size and idces.max() >= n:
                n = int(idces.max()) + 1
            if idces.size > 1 and np.any(np.diff(idces) < 0):
                order = np.argsort(idces, kind="stable")
                idces, times = idces[order], times[order]
            ends = np.searchsorted(idces, np.arange(n), side="right")
            train = [np.sort(t) for t in np.split(times, ends[:-1])] if n else []
        elif style == "group":
            g_name = group_per_unit or h5.text_attr(f, "group_per_unit") or "units"
            train = _read_group(h5, g_name, group_time_unit, fs_Hz)
        else:
            r_name = raster_dataset or h5.text_attr(f, "raster_dataset") or "raster"
            train = _read_raster(h5, h5.dataset(r_name), r_name, raster_bin_size_ms, start)
        raw_data = raw_time = None
        r_name = raw_dataset or h5.text_attr(f, "raw_dataset")
        if r_name:
            raw_data = h5.read(h5.dataset(r_name), r_name)
            rt_name = raw_time_dataset or h5.text_attr(f, "raw_time_dataset")
            if rt_name:
                raw_time = _read_times(h5, rt_name, raw_time_unit, "ms", fs_Hz)
            else:
                raw_time = np.arange(
                    np.shape(raw_data)[-1] if np.ndim(raw_data) else 0, dtype=float
                )
        length = length_ms
        if length is None:
            length = h5.number_attr(f, "length_ms", unit="ms")
        if length is not None and not math.isfinite(float(start) + float(length)):
            raise LoadError(
                f"{path}: start_time {start!r} ms + length_ms {length!r} ms overflows; refused"
            )
        metadata = parse_json(h5.text_attr(f, "metadata_json") or "{}", path, "metadata_json")
        if not isinstance(metadata, dict):
            raise LoadError(
                f"{path}: metadata_json must be a JSON object, got {type(metadata).__name__}"
            )
        neuron_attributes = h5.text_attr(f, "neuron_attributes_json")
        if neuron_attributes is not None:
            neuron_attributes = parse_json(neuron_attributes, path, "neuron_attributes_json")
            if not isinstance(neuron_attributes, list) or not all(
                isinstance(a, dict) for a in neuron_attributes
            ):
                raise LoadError(f"{path}: neuron_attributes_json must be a JSON list of objects")
        if neuron_attributes is not None and len(neuron_attributes) != len(train):
            neuron_attributes = None
        clip_to_recording(train, start, length)
        return spikedata_or_load_error(
            path,
            train,
            length=length,
            start_time=start,
            neuron_attributes=neuron_attributes,
            metadata=metadata,
            raw_data=raw_data,
            raw_time=raw_time,
        )


def _read_group(h5, g_name: str, group_time_unit, fs_Hz) -> list[np.ndarray]:
    """One unit per dataset of group ``g_name``, in the numeric order of their names."""
    import h5py

    grp = h5.group(g_name)
    keys = list(grp.keys())
    check_unit_count(len(keys), h5.source, f"group {g_name!r}")
    try:
        names = sorted(keys, key=int)
    except ValueError:
        raise LoadError(
            f"{h5.source}: group {g_name!r} holds datasets not named by unit index"
        ) from None
    train = []
    for name in names:
        dset = h5.node(name, grp)
        if not isinstance(dset, h5py.Dataset):
            raise LoadError(f"{h5.source}: {g_name}/{name} is not a dataset of spike times")
        label = f"{g_name}/{name}"
        unit, fs = _resolve_unit(h5, dset, group_time_unit, "s", fs_Hz, name)
        train.append(unit_to_ms(h5.read(dset, label), unit, fs).reshape(-1))
    return train


#: Spikes a raster may decode to beyond 129 per byte of file (1032 bytes of float64 per byte:
#: deflate's largest ratio): 2**27 spikes, 1 GiB.
RASTER_DECODE_SPIKES = 1 << 27
_RASTER_READ_MAX_BYTES = 256 * 1024 * 1024  # dense bytes read at once before columns are split


def _read_raster(h5, dset, name, bin_size_ms, start) -> list[np.ndarray]:
    path = h5.source
    if bin_size_ms is not None:
        bin_ms = float(bin_size_ms)
    else:
        bin_ms = h5.number_attr(dset, "bin_size_ms", unit="ms", positive=True)
        if bin_ms is None:
            raise LoadError(f"{path}: raster has no bin_size_ms attribute; pass raster_bin_size_ms")
    if dset.ndim != 2:
        raise LoadError(f"{path}: raster must be 2-D (units x bins), got shape {dset.shape}")
    h5.check_dataset(dset, name)
    if dset.dtype.kind not in "biuf":
        raise LoadError(f"{path}: raster {name!r} must hold counts, got dtype {dset.dtype}")
    n, n_bins = dset.shape
    check_unit_count(n, path, f"raster {name!r}")
    itemsize = dset.dtype.itemsize
    rows = dset.chunks[0] if dset.chunks else 64
    rows = max(rows, (_RASTER_ROWS_PER_BLOCK_BYTES // max(1, n_bins * itemsize)) // rows * rows)
    cols = n_bins
    if rows * n_bins * itemsize > _RASTER_READ_MAX_BYTES:  # rows too long to read whole
        step = dset.chunks[1] if dset.chunks else 1
        cols = max(step, _RASTER_ROWS_PER_BLOCK_BYTES // (rows * itemsize) // step * step)
    limit = MAX_EXPANSION * h5.size // 8 + RASTER_DECODE_SPIKES
    decoded = 0.0
    train = []
    for u0 in range(0, n, rows):
        u1 = min(n, u0 + rows)
        pieces: list[list[np.ndarray]] = [[] for _ in range(u1 - u0)]
        for c0 in range(0, n_bins, cols) if n_bins else ():
            block = dset[u0:u1, c0 : min(n_bins, c0 + cols)]
            for r, row in enumerate(block):
                nz = np.flatnonzero(row)
                counts = row[nz]
                if counts.dtype.kind in "if" and counts.size:
                    if counts.dtype.kind == "f" and not np.isfinite(counts).all():
                        raise LoadError(f"{path}: raster {name!r} holds non-finite counts")
                    if counts.min() < 0:
                        raise LoadError(f"{path}: raster {name!r} holds negative counts")
                decoded += float(counts.sum(dtype=np.float64))
                if decoded > limit:
                    raise LoadError(
                        f"{path}: raster {name!r} decodes to more than {limit} spikes (129 per "
                        f"byte of this {h5.size}-byte file + {RASTER_DECODE_SPIKES}); refused"
                    )
                edges = start + (nz + c0).astype(np.float64) * bin_ms
                pieces[r].append(np.repeat(edges, counts.astype(np.int64)))
        for p in pieces:
            train.append(p[0] if len(p) == 1 else np.concatenate(p) if p else np.zeros(0))
    return train


# --------------------------------------------------------------------------- registry entry

#: Writer keywords every style uses.
COMMON_KEYS = ("style", "raw_dataset", "raw_time_dataset", "raw_time_unit")
#: Writer keywords of each style (the writer ignores the other styles' keywords, so they are
#: left out of a job's options: changing them re-runs nothing).
STYLE_KEYS = {
    "ragged": ("spike_times_dataset", "spike_times_index_dataset", "spike_times_unit"),
    "raster": (
        "raster_dataset",
        "raster_bin_size_ms",
        "raster_dtype",
        "raster_compression",
        "raster_compression_opts",
        "raster_max_cells",
    ),
    "group": ("group_per_unit", "group_time_unit"),
    "paired": ("idces_dataset", "times_dataset", "times_unit"),
}
#: Reader keywords of each style.
READER_KEYS = {
    "ragged": ("spike_times_dataset", "spike_times_index_dataset", "spike_times_unit"),
    "raster": ("raster_dataset", "raster_bin_size_ms"),
    "group": ("group_per_unit", "group_time_unit"),
    "paired": ("idces_dataset", "times_dataset", "times_unit"),
}
#: The keyword holding each style's time unit, and the writer's default for it.
UNIT_KEY = {
    "ragged": ("spike_times_unit", "s"),
    "group": ("group_time_unit", "s"),
    "paired": ("times_unit", "ms"),
}


class HDF5Format(Format):
    """HDF5 in four styles; the config block holds named entries, one output each
    (``results/hdf5/<entry>/<recording>.h5``)."""

    name = "hdf5"
    description = "HDF5 file in one of four layouts (ragged, raster, group, paired)"
    extension = ".h5"
    option_keys = COMMON_KEYS + tuple(k for keys in STYLE_KEYS.values() for k in keys)
    config_example = "hdf5: {ragged: {style: ragged}}"
    resources = ResourceModel(base_mem_mb=350)

    def writer(self):
        return export_spikedata_to_hdf5

    def reader(self):
        return load_spikedata_from_hdf5

    def outputs_from_config(self, block):
        outputs = []
        for entry, entry_block in (block or {}).items():
            style = entry_block["style"]
            if style == "raster" and entry_block.get("raster_bin_size_ms") is None:
                raise OptionError(
                    f"config key hdf5.{entry}.raster_bin_size_ms: style 'raster' needs a bin "
                    "width in ms (e.g. 1.0)"
                )
            bin_ms = entry_block.get("raster_bin_size_ms")
            if isinstance(bin_ms, float) and not np.isfinite(bin_ms):
                raise OptionError(
                    f"config key hdf5.{entry}.raster_bin_size_ms: {bin_ms!r} is not a width in ms"
                )
            if (
                entry_block.get("raw_time_dataset") is not None
                and entry_block.get("raw_dataset") is None
            ):
                raise OptionError(
                    f"config key hdf5.{entry}.raw_time_dataset: needs hdf5.{entry}.raw_dataset too"
                )
            options = pick(entry_block, COMMON_KEYS + STYLE_KEYS[style])
            outputs.append((f"hdf5/{entry}", options))
        return outputs

    def time_unit(self, options):
        style = options["style"]
        if style == "raster":
            return "bins"
        key, default = UNIT_KEY[style]
        return options.get(key) or default

    def _raw_in_samples(self, options) -> bool:
        return (
            options.get("raw_dataset") is not None
            and options.get("raw_time_dataset") is not None
            and options.get("raw_time_unit") == "samples"
        )

    def uses_fs(self, options):
        return self.time_unit(options) in ("samples", "bins") or self._raw_in_samples(options)

    def needs_fs(self, options):
        return self.time_unit(options) == "samples" or self._raw_in_samples(options)

    def time_tolerance(self, options, fs_Hz):
        if self.time_unit(options) == "bins":  # a spike comes back at its bin's left edge
            return float(options["raster_bin_size_ms"]), 4
        return super().time_tolerance(options, fs_Hz)

    def reader_kwargs(self, options, fs_Hz, *, pickle_loading=None):
        kwargs = pick(options, READER_KEYS[options["style"]])
        if self.time_unit(options) == "samples":
            kwargs["fs_Hz"] = fs_Hz
        return kwargs


FORMAT = HDF5Format()
