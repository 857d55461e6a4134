"""The SpikeData container: per-unit spike times in milliseconds.

Pickle-compatible with SpikeLab 0.1.x: the instance state is a plain ``__dict__`` with the keys
``train``, ``N``, ``length``, ``start_time``, ``neuron_attributes``, ``metadata``, ``raw_data``
and ``raw_time``. Pickles name the class ``spikelab.spikedata.spikedata.SpikeData``.
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

__all__ = ["SpikeData", "InvalidSpikeDataError", "STATE_FIELDS", "validate_finished", "short_repr"]

#: The instance state every SpikeData pickle sets (SpikeLab 0.1.x writes exactly these).
STATE_FIELDS = (
    "train",
    "N",
    "length",
    "start_time",
    "neuron_attributes",
    "metadata",
    "raw_data",
    "raw_time",
)

_ELECTRODE_KEYS = ("electrode", "channel", "ch")
_LOCATION_KEYS = ("location", "position")


class InvalidSpikeDataError(ValueError):
    """A SpikeData (constructed or unpickled) is internally inconsistent."""


def _as_train(unit: int, times: Any) -> np.ndarray:
    try:
        arr = np.asarray(times)
    except Exception as exc:  # ragged nested input and the like
        raise InvalidSpikeDataError(f"unit {unit}: spike times are not an array ({exc})") from None
    if arr.dtype.kind not in "iuf" and not (arr.dtype.kind == "O" and arr.size == 0):
        raise InvalidSpikeDataError(
            f"unit {unit}: spike times must be numbers (ms), got dtype {arr.dtype}"
        )
    if arr.ndim != 1:
        arr = arr.reshape(-1) if arr.size <= 1 else arr
        if arr.ndim != 1:
            raise InvalidSpikeDataError(
                f"unit {unit}: spike times must be 1-D, got shape {np.shape(times)}"
            )
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    if arr.size and not np.isfinite(arr).all():
        bad = arr[~np.isfinite(arr)][0]
        raise InvalidSpikeDataError(f"unit {unit}: spike time {bad} is not finite")
    return arr


class SpikeData:
    """Spike trains of ``N`` units, times in milliseconds.

    Parameters
    ----------
    train : sequence of array-like
        One array of spike times (ms) per unit; sorted here if needed.
    N : int, optional
        Number of units; must equal ``len(train)`` when given.
    length : float, optional
        Recording duration (ms). Default: last spike time minus ``start_time`` (0 if no spikes).
    start_time : float
        Time of the recording's first instant (ms); may be negative (event-centred data).
    neuron_attributes : list of dict, optional
        One dict per unit (keys such as ``electrode``, ``location``, ``cluster_id``).
    metadata : dict, optional
        Free-form recording metadata (e.g. ``fs_Hz``).
    raw_data : array-like, optional
        Raw traces, channels x samples.
    raw_time : array-like, optional
        Time of each raw sample (ms); length equals ``raw_data.shape[1]``.
    """

    def __init__(
        self,
        train: Iterable[Any],
        *,
        N: int | None = None,
        length: float | None = None,
        start_time: float = 0.0,
        neuron_attributes: list[dict] | None = None,
        metadata: Mapping[str, Any] | None = None,
        raw_data: Any = None,
        raw_time: Any = None,
    ) -> None:
        trains = [_as_train(i, t) for i, t in enumerate(train)]
        trains = [t if _is_sorted(t) else np.sort(t) for t in trains]
        start_time = _finite_float("start_time", start_time)
        if length is None:
            last = max((t[-1] for t in trains if t.size), default=start_time)
            length = float(last) - start_time
        self.__dict__.update(
            train=trains,
            N=len(trains) if N is None else N,
            length=length,
            start_time=start_time,
            neuron_attributes=None if neuron_attributes is None else list(neuron_attributes),
            metadata={} if metadata is None else dict(metadata),
            raw_data=np.zeros((0, 0)) if raw_data is None else np.asarray(raw_data),
            raw_time=np.zeros((0,)) if raw_time is None else np.asarray(raw_time, dtype=float),
        )
        self._validate()

    # ------------------------------------------------------------------ pickling
    def __getstate__(self) -> dict:
        return dict(self.__dict__)

    def __setstate__(self, state: Any) -> None:
        """Set and validate the unpickled state (plain ``pickle.load`` calls this as the state
        is read; the restricted loader calls it only after unpickling has ended).

        The state must hold every field of :data:`STATE_FIELDS`, no callable or class at any
        depth (dict keys and object arrays included), and pass :meth:`_validate`.
        """
        if not isinstance(state, dict):
            raise InvalidSpikeDataError(
                f"SpikeData state must be a dict, got {type(state).__name__}"
            )
        for key in state:
            if not isinstance(key, str):
                raise InvalidSpikeDataError(
                    f"SpikeData state has a non-string key {short_repr(key)}"
                )
        _require_fields(state, "state ")
        for key, value in state.items():
            if _holds_callable(value):
                raise InvalidSpikeDataError(
                    f"SpikeData attribute {key!r} holds a callable or class; refused"
                )
        self._apply_state(state)

    def _apply_state(self, state: dict[str, Any]) -> None:
        """Convert and validate a complete state (str keys, every field of STATE_FIELDS) and
        make it this object's; the caller has checked it holds no callable."""
        state = dict(state)
        train = state["train"]
        if not isinstance(train, list | tuple):
            raise InvalidSpikeDataError(
                f"SpikeData.train must be a list of arrays, got {type(train).__name__}"
            )
        state["train"] = [_as_train(i, t) for i, t in enumerate(train)]
        if state["length"] is None:
            last = max((t[-1] for t in state["train"] if t.size), default=state["start_time"])
            state["length"] = float(last) - _finite_float("start_time", state["start_time"])
        if state["metadata"] is None:
            state["metadata"] = {}
        if state["raw_data"] is None:
            state["raw_data"] = np.zeros((0, 0))
        if state["raw_time"] is None:
            state["raw_time"] = np.zeros((0,))
        self.__dict__.update(state)
        self._validate(require_sorted=True)

    # ---------------------------------------------------------------- validation
    def _validate(self, *, require_sorted: bool = False) -> None:
        d = self.__dict__
        n = d["N"]
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
            raise InvalidSpikeDataError(f"N must be a non-negative integer, got {short_repr(n)}")
        if int(n) != len(d["train"]):
            raise InvalidSpikeDataError(f"N={n} but train holds {len(d['train'])} units")
        d["N"] = int(n)
        d["start_time"] = _finite_float("start_time", d["start_time"])
        d["length"] = _finite_float("length", d["length"])
        if d["length"] < 0:
            raise InvalidSpikeDataError(f"length must be >= 0 ms, got {d['length']}")
        lo, hi = d["start_time"], d["start_time"] + d["length"]
        for i, t in enumerate(d["train"]):
            if t.size == 0:
                continue
            is_sorted = _is_sorted(t)
            if require_sorted and not is_sorted:
                j = int(np.flatnonzero(np.diff(t) < 0)[0])
                raise InvalidSpikeDataError(
                    f"unit {i}: spike times are not sorted (t[{j}]={t[j]} > t[{j + 1}]={t[j + 1]})"
                )
            tmin, tmax = (t[0], t[-1]) if is_sorted else (t.min(), t.max())
            if tmin < lo or tmax > hi:
                bad = tmin if tmin < lo else tmax
                raise InvalidSpikeDataError(
                    f"unit {i}: spike time {bad} ms lies outside the recording "
                    f"[{lo}, {hi}] ms (start_time={lo}, length={d['length']})"
                )
        attrs = d["neuron_attributes"]
        if attrs is not None:
            if not isinstance(attrs, list | tuple):
                raise InvalidSpikeDataError(
                    f"neuron_attributes must be a list of dicts, got {type(attrs).__name__}"
                )
            if len(attrs) != d["N"]:
                raise InvalidSpikeDataError(
                    f"neuron_attributes has {len(attrs)} entries for N={d['N']} units"
                )
            for i, a in enumerate(attrs):
                if not isinstance(a, dict):
                    raise InvalidSpikeDataError(
                        f"neuron_attributes[{i}] must be a dict, got {type(a).__name__}"
                    )
            d["neuron_attributes"] = list(attrs)
        if not isinstance(d["metadata"], dict):
            raise InvalidSpikeDataError(
                f"metadata must be a dict, got {type(d['metadata']).__name__}"
            )
        raw = np.asarray(d["raw_data"])
        if raw.ndim == 1:
            raw = raw.reshape(1, -1) if raw.size else np.zeros((0, 0), raw.dtype)
        if raw.ndim != 2:
            raise InvalidSpikeDataError(
                f"raw_data must be channels x samples (2-D), got shape {raw.shape}"
            )
        if raw.size and raw.dtype.kind not in "iuf":
            raise InvalidSpikeDataError(f"raw_data must be numeric, got dtype {raw.dtype}")
        rt = np.asarray(d["raw_time"])
        if rt.size and rt.dtype.kind not in "iuf":
            raise InvalidSpikeDataError(f"raw_time must be numeric (ms), got dtype {rt.dtype}")
        rt = rt.astype(np.float64, copy=False).reshape(-1)
        # raw_data of no channels may still have samples (shape (0, T)), as SpikeLab allows
        if rt.size != raw.shape[1] and (raw.size or rt.size):
            if raw.shape[1] == 0:
                raise InvalidSpikeDataError(f"raw_time has {rt.size} samples but raw_data is empty")
            raise InvalidSpikeDataError(
                f"raw_time has {rt.size} samples but raw_data has {raw.shape[1]} "
                "(raw_data is channels x samples)"
            )
        d["raw_data"], d["raw_time"] = raw, rt

    # ---------------------------------------------------------------- properties
    @property
    def end_time(self) -> float:
        """``start_time + length`` (ms)."""
        return self.start_time + self.length

    @property
    def n_spikes(self) -> int:
        """Total number of spikes over all units."""
        return int(sum(t.size for t in self.train))

    @property
    def electrodes(self) -> np.ndarray | None:
        """Per-unit electrode/channel index (int64, shape (N,)), or None if any unit lacks one."""
        vals = _attribute_column(self.neuron_attributes, _ELECTRODE_KEYS, self.N)
        if vals is None:
            return None
        try:
            arr = np.asarray(vals)
            if arr.ndim != 1 or arr.dtype.kind not in "iuf" or not np.all(arr == np.round(arr)):
                return None
            return arr.astype(np.int64)
        except (TypeError, ValueError):
            return None

    @property
    def unit_locations(self) -> np.ndarray | None:
        """Per-unit location (float64, shape (N, D), um), or None if any unit lacks one.

        Taken from ``location``/``position`` or from ``x``/``y`` (and ``z``) attributes.
        """
        attrs = self.neuron_attributes
        if not attrs or self.N == 0:
            return None
        vals = _attribute_column(attrs, _LOCATION_KEYS, self.N)
        if vals is None:
            axes = [k for k in ("x", "y", "z") if all(k in a for a in attrs)]
            if len(axes) < 2 or axes[:2] != ["x", "y"]:
                return None
            vals = [[a[k] for k in axes] for a in attrs]
        try:
            arr = np.asarray(vals, dtype=np.float64)
        except (TypeError, ValueError):
            return None
        if arr.ndim != 2 or arr.shape[0] != self.N:
            return None
        return arr

    # ------------------------------------------------------------ derived forms
    def idces_times(self) -> tuple[np.ndarray, np.ndarray]:
        """All spikes as (unit index int64, time ms float64), sorted by time (stable in unit)."""
        counts = np.fromiter((t.size for t in self.train), dtype=np.int64, count=self.N)
        times = np.concatenate(self.train) if self.N else np.zeros(0)
        idces = np.repeat(np.arange(self.N, dtype=np.int64), counts)
        order = np.argsort(times, kind="stable")
        return idces[order], times[order]

    def n_bins(self, bin_size_ms: float) -> int:
        """Number of bins of ``bin_size_ms`` (ms) covering ``[start_time, start_time+length]``."""
        bin_size_ms = _positive_float("bin_size_ms", bin_size_ms)
        return max(1, math.ceil(self.length / bin_size_ms)) if self.length > 0 else 1

    def bin_indices(self, unit: int, bin_size_ms: float) -> np.ndarray:
        """Bin index (int64) of every spike of ``unit`` for bins of ``bin_size_ms`` (ms)."""
        nb = self.n_bins(bin_size_ms)
        b = np.floor((self.train[unit] - self.start_time) / bin_size_ms).astype(np.int64)
        return np.clip(b, 0, nb - 1)

    def sparse_raster(
        self, bin_size_ms: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
        """Spike counts per (unit, bin) in COO form: ``(rows, cols, counts, (N, T))``.

        Bins are ``bin_size_ms`` (ms) wide from ``start_time``; a spike at the very end of the
        recording counts in the last bin.
        """
        nb = self.n_bins(bin_size_ms)
        rows, cols, counts = [], [], []
        for i in range(self.N):
            b = self.bin_indices(i, bin_size_ms)
            if not b.size:
                continue
            u, c = np.unique(b, return_counts=True)
            rows.append(np.full(u.size, i, dtype=np.int64))
            cols.append(u)
            counts.append(c.astype(np.int64))
        if not rows:
            z = np.zeros(0, dtype=np.int64)
            return z, z.copy(), z.copy(), (self.N, nb)
        return np.concatenate(rows), np.concatenate(cols), np.concatenate(counts), (self.N, nb)

    def raster(self, bin_size_ms: float) -> np.ndarray:
        """Dense spike-count matrix (N, T) for bins of ``bin_size_ms`` (ms). Mind the memory."""
        rows, cols, counts, shape = self.sparse_raster(bin_size_ms)
        out = np.zeros(shape, dtype=np.int64)
        out[rows, cols] = counts
        return out

    # ------------------------------------------------------------ conveniences
    def to_hdf5(self, filepath, **kwargs) -> None:
        """Write to HDF5; see ``data_exporters.export_spikedata_to_hdf5``."""
        from spikelab.data_loaders.data_exporters import export_spikedata_to_hdf5

        return export_spikedata_to_hdf5(self, filepath, **kwargs)

    def to_nwb(self, filepath, **kwargs) -> None:
        """Write to NWB; see ``data_exporters.export_spikedata_to_nwb``."""
        from spikelab.data_loaders.data_exporters import export_spikedata_to_nwb

        return export_spikedata_to_nwb(self, filepath, **kwargs)

    def to_kilosort(self, folder, fs_Hz: float | None = None, **kwargs):
        """Write a KiloSort/Phy folder; see ``data_exporters.export_spikedata_to_kilosort``.

        ``fs_Hz`` (Hz) defaults to ``metadata["fs_Hz"]`` (as the workflow does); without
        either, ExportError before anything is written.
        """
        from spikelab.data_loaders.data_exporters import export_spikedata_to_kilosort
        from spikelab.formats.errors import ExportError
        from spikelab.formats.time_units import check_fs

        if fs_Hz is None:
            fs_Hz = self.metadata.get("fs_Hz")
            if fs_Hz is None:
                raise ExportError(
                    "to_kilosort needs the sampling rate: pass fs_Hz (Hz) or set metadata['fs_Hz']"
                )
            fs_Hz = check_fs(fs_Hz, what="metadata['fs_Hz']")
        return export_spikedata_to_kilosort(self, folder, fs_Hz=fs_Hz, **kwargs)

    def to_pickle(self, filepath, **kwargs) -> str:
        """Pickle atomically; see ``data_exporters.export_to_pickle``."""
        from spikelab.data_loaders.data_exporters import export_to_pickle

        return export_to_pickle(self, filepath, **kwargs)

    def __repr__(self) -> str:
        return (
            f"SpikeData(N={self.N}, spikes={self.n_spikes}, start_time={self.start_time} ms, "
            f"length={self.length} ms)"
        )


def _is_sorted(t: np.ndarray) -> bool:
    return t.size < 2 or bool((t[1:] >= t[:-1]).all())


def _finite_float(name: str, value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError, OverflowError):
        raise InvalidSpikeDataError(
            f"{name} must be a number (ms), got {short_repr(value)}"
        ) from None
    if not math.isfinite(out):
        raise InvalidSpikeDataError(f"{name} must be finite, got {short_repr(value)}")
    return out


def _positive_float(name: str, value: Any) -> float:
    out = _finite_float(name, value)
    if out <= 0:
        raise InvalidSpikeDataError(f"{name} must be > 0, got {short_repr(value)}")
    return out


def _attribute_column(attrs, keys, n) -> list | None:
    """Per-unit value of the first key in ``keys`` that every unit has, else None."""
    if not attrs or len(attrs) != n:
        return None
    for key in keys:
        if all(isinstance(a, dict) and key in a and a[key] is not None for a in attrs):
            return [a[key] for a in attrs]
    return None


_INERT = frozenset({str, int, float, bool, type(None), bytes, complex})


def _holds_callable(value: Any) -> bool:
    """Whether ``value`` is or holds a class or callable anywhere: containers are walked
    iteratively to any depth, dict keys and object arrays included (each container once)."""
    todo = [value]
    seen: set[int] = set()
    while todo:
        v = todo.pop()
        if type(v) in _INERT:
            continue
        if isinstance(v, type) or callable(v):
            return True
        if isinstance(v, dict | list | tuple | set | frozenset) or (
            isinstance(v, np.ndarray) and v.dtype.hasobject
        ):
            if id(v) in seen:
                continue
            seen.add(id(v))
            if isinstance(v, dict):
                todo += [k for k in v if type(k) not in _INERT]
                v = v.values()
            elif isinstance(v, np.ndarray):
                v = v.ravel().tolist() if v.dtype.fields is None else [v.tolist()]
            todo += [x for x in v if type(x) not in _INERT]
    return False


def _require_fields(fields: Mapping[str, Any], what: str = "") -> None:
    missing = [k for k in STATE_FIELDS if k not in fields]
    if missing:
        raise InvalidSpikeDataError(
            f"SpikeData {what}lacks {', '.join(map(repr, missing))} (a SpikeData pickle sets "
            f"all of {', '.join(STATE_FIELDS)})"
        )


def validate_finished(sd: SpikeData) -> None:
    """Check that a SpikeData read by plain ``pickle.load`` is complete and consistent: every
    field of :data:`STATE_FIELDS` set, trains 1-D finite sorted float64 (converted as needed)
    inside ``[start_time, start_time + length]`` ms. Raises InvalidSpikeDataError."""
    d = sd.__dict__
    _require_fields(d)
    train = d["train"]
    if not isinstance(train, list | tuple):
        raise InvalidSpikeDataError(
            f"SpikeData.train must be a list of arrays, got {type(train).__name__}"
        )
    d["train"] = [_as_train(i, t) for i, t in enumerate(train)]
    sd._validate(require_sorted=True)


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 3, 80, 80, 40


def short_repr(value: Any) -> str:
    """A repr of at most ~100 characters, safe on deep, huge or hostile values."""
    try:
        return _REPR.repr(value)
    except Exception:
        return f"<{type(value).__module__}.{type(value).__qualname__}>"
