"""What SpikeLab's NWB files hold beyond the NWB schema, shared by the writer and the readers:
the default names, the JSON round-trip state (``/scratch/spikelab``) and the parts a reader
extracts before building a SpikeData."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from spikelab.formats.errors import LoadError
from spikelab.formats.files import MAX_UNITS, parse_json
from spikelab.formats.metadata import json_safe

__all__ = [
    "DEFAULT_SPIKE_TIMES_DATASET",
    "DEFAULT_SPIKE_TIMES_INDEX_DATASET",
    "DEFAULT_GROUP",
    "STATE_NAME",
    "STATE_VERSION",
    "RESERVED_COLUMNS",
    "check_names",
    "spikelab_state",
    "parse_state",
    "Parts",
    "as_index",
]

_REQUIRED = object()

DEFAULT_SPIKE_TIMES_DATASET = "spike_times"
DEFAULT_SPIKE_TIMES_INDEX_DATASET = "spike_times_index"
DEFAULT_GROUP = "units"
STATE_NAME = "spikelab"  # /scratch/spikelab in NWB, attribute of the group in plain HDF5
STATE_VERSION = 1

# Units columns defined by the NWB schema (and their indexes) and the attributes of the Units
# group: never used as names of attribute columns.
RESERVED_COLUMNS = {
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


def check_names(
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


def spikelab_state(sd, fs: float | None, offset_ms: float) -> dict[str, Any]:
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


class Parts:
    """What both NWB readers extract, so that they build the same SpikeData."""

    def __init__(self) -> None:
        self.times_s: np.ndarray = np.zeros(0)
        self.ends: np.ndarray | None = None
        self.state: dict | None = None
        self.resolution: float | None = None
        self.columns: dict[str, list] = {}
        self.obs: tuple[float, float] | None = None
        self.electrode_ids: list | None = None  # SpikeLab 0.1.2's plain layout
        self.electrodes: dict[str, list] = {}  # per-unit electrode, location... (NWB)
        self.unit_ids: np.ndarray | None = None  # the Units table's ids (NWB)
        self.file_meta: dict[str, Any] = {}
        self.start_ms: float | None = None
        self.length_ms: float | None = None


def _number(state: dict, key: str, source: str, default: Any = _REQUIRED) -> Any:
    value = state.get(key, default)
    if value is _REQUIRED:
        raise LoadError(f"{source}: the SpikeLab state ({STATE_NAME}) lacks {key!r}")
    if value is None and default is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise LoadError(
            f"{source}: the SpikeLab state ({STATE_NAME}): {key!r} must be a finite number, "
            f"got {value!r:.80}"
        )
    return value


def parse_state(text: Any, source: str) -> dict:
    """The SpikeLab state (JSON) of an NWB or plain file, with every field the readers use
    checked; any fault is a LoadError naming the file and the field."""
    field = f"the SpikeLab state ({STATE_NAME})"
    if isinstance(text, np.ndarray) and text.shape == ():
        text = text[()]
    state = parse_json(text, source, field)
    if not isinstance(state, dict) or state.get("format") != "spikelab":
        raise LoadError(f"{source}: {field} is not SpikeLab's")
    version = state.get("version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise LoadError(f"{source}: {field}: 'version' must be an integer, got {version!r:.80}")
    if version > STATE_VERSION:
        raise LoadError(f"{source}: written by a newer SpikeLab (state version {version}); upgrade")
    n = _number(state, "N", source)
    if isinstance(n, float) and n.is_integer() and abs(n) <= MAX_UNITS:
        n = state["N"] = int(n)
    if not isinstance(n, int) or not 0 <= n <= MAX_UNITS:
        raise LoadError(
            f"{source}: {field}: 'N' must be a number of units from 0 to {MAX_UNITS}, got {n!r}"
        )
    start = _number(state, "start_time_ms", source)
    length = _number(state, "length_ms", source)
    offset = _number(state, "time_offset_ms", source, 0.0)
    _number(state, "fs_Hz", source, None)
    if not math.isfinite(start + length) or not math.isfinite(start - offset):
        raise LoadError(
            f"{source}: {field}: start_time_ms {start!r}, length_ms {length!r} and "
            f"time_offset_ms {offset!r} overflow"
        )
    if not isinstance(state.get("metadata") or {}, dict):
        raise LoadError(f"{source}: {field}: 'metadata' must be an object")
    attrs = state.get("neuron_attributes")
    if attrs is not None and not (
        isinstance(attrs, list) and all(isinstance(a, dict) for a in attrs)
    ):
        raise LoadError(f"{source}: {field}: 'neuron_attributes' must be a list of objects")
    return state


def as_index(values: Any, source: str, label: str) -> np.ndarray:
    """``values`` (cumulative ends or row indices) as a 1-D int64 array; non-numbers and
    non-finite floats are a LoadError naming ``label``."""
    values = np.asarray(values).reshape(-1)
    if values.dtype.kind not in "biuf" or (
        values.dtype.kind == "f" and not np.isfinite(values).all()
    ):
        raise LoadError(f"{source}: {label!r} must hold integer indices, got {values.dtype}")
    return values.astype(np.int64)
