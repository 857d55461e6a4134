"""Read SpikeData (times in ms) from an HDF5 file of any of the four styles, ours or another
writer's (dataset names given), without following links out of the file."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from spikelab.formats.errors import LoadError, spikedata_or_load_error
from spikelab.formats.files import (
    MAX_EXPANSION,
    MAX_UNITS,
    check_unit_count,
    loader_boundary,
    parse_json,
)
from spikelab.formats.hdf5 import layout
from spikelab.formats.hdf5.layout import HDF5_STYLES
from spikelab.formats.strict_hdf5 import open_hdf5
from spikelab.formats.time_units import (
    TIME_UNITS,
    clip_to_recording,
    unit_to_ms,
)
from spikelab.spikedata.spikedata import SpikeData

__all__ = ["load_spikedata_from_hdf5"]


def _resolve_unit(
    h5, dset, given: str | None, default: str, fs_Hz, name, default_fs_Hz=None
) -> tuple[str, Any]:
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
    if fs is None:
        fs = default_fs_Hz
    if unit == "samples" and fs is None:
        raise LoadError(f"{path}: dataset {name!r} holds samples; pass fs_Hz (Hz)")
    return unit, fs


def _read_times(h5, name, given, default, fs_Hz, default_fs_Hz=None) -> np.ndarray:
    """The times of dataset ``name`` in ms (its unit from ``given``, its attribute or
    ``default``; its rate from ``fs_Hz``, its attribute or ``default_fs_Hz``)."""
    dset = h5.dataset(name)
    unit, fs = _resolve_unit(h5, dset, given, default, fs_Hz, name, default_fs_Hz)
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
    metadata: Mapping[str, Any] | None = None,
    default_fs_Hz: float | None = None,
) -> SpikeData:
    """Read SpikeData (times in ms) from an HDF5 file written in any of the four styles.

    The style is chosen by which dataset/group names are given (``raster_dataset``;
    ``spike_times_dataset`` + ``spike_times_index_dataset``; ``group_per_unit``;
    ``idces_dataset`` + ``times_dataset``); with none given, by the file's ``spikelab_style``.
    A unit left as None is read from the dataset's ``unit`` attribute, else it takes the
    exporter's default (s for ragged and group, ms for paired and raw time); a unit given
    that contradicts the file's attribute is an error. ``fs_Hz`` (Hz) is needed for samples
    unless the file records it; ``default_fs_Hz`` (Hz) is used only where it does not.
    ``length_ms``/``start_time_ms`` override the file's values; ``metadata`` entries are
    added to (and override) the file's metadata.
    Raster files give each spike the left edge of its bin.

    The file is untrusted (see :mod:`~spikelab.formats.strict_hdf5`): only a regular file is
    opened; external links, external raw storage and virtual datasets are refused before any
    data is read; no dataset is read whose declared size the file cannot hold (1032:1 for
    compressed data); at most 2**20 units, and a raster decodes to at most 129 spikes per byte
    of file plus 2**27 spikes. A missing file raises FileNotFoundError; any other fault of the
    file, a LoadError naming the file (and the dataset or attribute).
    """
    path = os.fspath(filepath)
    extra_metadata = dict(metadata or {})
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
            flat = _read_times(h5, st_name, spike_times_unit, "s", fs_Hz, default_fs_Hz)
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
            times = _read_times(h5, t_name, times_unit, "ms", fs_Hz, default_fs_Hz)
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
            train = _read_group(h5, g_name, group_time_unit, fs_Hz, default_fs_Hz)
        else:
            r_name = raster_dataset or h5.text_attr(f, "raster_dataset") or "raster"
            train = _read_raster(h5, h5.dataset(r_name), r_name, raster_bin_size_ms, start)
        raw_data = raw_time = None
        r_name = raw_dataset or h5.text_attr(f, "raw_dataset")
        if r_name:
            raw_data = h5.read(h5.dataset(r_name), r_name)
            rt_name = raw_time_dataset or h5.text_attr(f, "raw_time_dataset")
            if rt_name:
                raw_time = _read_times(h5, rt_name, raw_time_unit, "ms", fs_Hz, default_fs_Hz)
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
        metadata.update(extra_metadata)
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


def _read_group(h5, g_name: str, group_time_unit, fs_Hz, default_fs_Hz=None) -> list[np.ndarray]:
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
        unit, fs = _resolve_unit(h5, dset, group_time_unit, "s", fs_Hz, name, default_fs_Hz)
        train.append(unit_to_ms(h5.read(dset, label), unit, fs).reshape(-1))
    return train


#: Spikes a raster may decode to beyond 129 per byte of file (1032 bytes of float64 per byte:
#: deflate's largest ratio): 2**27 spikes, 1 GiB.
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
    rows = max(rows, (layout.RASTER_BLOCK_BYTES // max(1, n_bins * itemsize)) // rows * rows)
    cols = n_bins
    if rows * n_bins * itemsize > layout.RASTER_READ_MAX_BYTES:  # rows too long to read whole
        step = dset.chunks[1] if dset.chunks else 1
        cols = max(step, layout.RASTER_BLOCK_BYTES // (rows * itemsize) // step * step)
    limit = MAX_EXPANSION * h5.size // 8 + layout.RASTER_DECODE_SPIKES
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
                        f"byte of this {h5.size}-byte file + {layout.RASTER_DECODE_SPIKES}); "
                        "refused"
                    )
                edges = start + (nz + c0).astype(np.float64) * bin_ms
                pieces[r].append(np.repeat(edges, counts.astype(np.int64)))
        for p in pieces:
            train.append(p[0] if len(p) == 1 else np.concatenate(p) if p else np.zeros(0))
    return train
