"""Time units of spike times in files (ms, s, samples) and the conversions to and from ms."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from spikelab.formats.errors import ExportError, LoadError

__all__ = [
    "TIME_UNITS",
    "check_fs",
    "check_time_unit",
    "ms_to_unit",
    "unit_to_ms",
    "clip_to_recording",
    "check_samples_fit",
    "check_times_fit",
]

TIME_UNITS = ("ms", "s", "samples")


def check_fs(fs_Hz: Any, *, what: str = "fs_Hz") -> float:
    """Return ``fs_Hz`` (Hz) as a finite positive float or raise ExportError."""
    try:
        fs = float(fs_Hz)
    except (TypeError, ValueError):
        raise ExportError(f"{what} must be a sampling rate in Hz, got {fs_Hz!r}") from None
    if not math.isfinite(fs) or fs <= 0:
        raise ExportError(f"{what} must be a finite sampling rate > 0 Hz, got {fs_Hz!r}")
    return fs


def check_time_unit(unit: Any, fs_Hz: Any = None, *, what: str = "time unit") -> float | None:
    """Validate a time unit (``ms``, ``s`` or ``samples``); return fs (Hz) when samples."""
    if unit not in TIME_UNITS:
        raise ExportError(f"{what} must be one of {', '.join(TIME_UNITS)}; got {unit!r}")
    if unit == "samples":
        if fs_Hz is None:
            raise ExportError(f"{what}='samples' needs fs_Hz (the sampling rate in Hz)")
        return check_fs(fs_Hz)
    return None if fs_Hz is None else check_fs(fs_Hz)


def ms_to_unit(times_ms: np.ndarray, unit: str, fs_Hz: float | None = None) -> np.ndarray:
    """Convert times from ms to ``unit``: s (float64), ms (float64) or samples (int64, rounded)."""
    times_ms = np.asarray(times_ms, dtype=np.float64)
    if unit == "ms":
        return times_ms
    if unit == "s":
        return times_ms / 1000.0
    if unit == "samples":
        return np.rint(times_ms * (fs_Hz / 1000.0)).astype(np.int64)
    raise ExportError(f"unknown time unit {unit!r}")


_INT64_SPAN = 2.0**63  # sample indices are int64: -2**63 <= s < 2**63


def _check_sample(t_ms: float, fs_Hz: float, offset: int, what: str, where: str) -> None:
    """ExportError unless ``rint(t_ms * fs_Hz / 1000) + offset`` (as ms_to_unit rounds) is an
    int64."""
    t_ms = float(t_ms)
    s = float(np.rint(np.float64(t_ms) * (fs_Hz / 1000.0)))
    if math.isfinite(s) and -_INT64_SPAN <= s < _INT64_SPAN:
        if -(2**63) <= int(s) + offset < 2**63:
            return
    shift = f" + sample_offset {offset}" if offset else ""
    raise ExportError(
        f"{where}: time {t_ms!r} ms is {s:.6g} samples{shift} at fs_Hz={fs_Hz:g} Hz, outside "
        f"the int64 sample indices a file holds (|samples| < 2**63 = 9.22e18); it cannot be "
        f"written with {what}='samples': fix the time or the recording, or write times in "
        "'ms' or 's'"
    )


def check_samples_fit(
    trains, fs_Hz: float, *, what: str, offset: int = 0, ascending: bool = False
) -> None:
    """Raise ExportError (naming the unit, the time and fs) unless every time (ms) of
    ``trains``, rounded to a sample at ``fs_Hz`` (Hz) plus ``offset`` (samples), is an int64
    sample index; ``what`` names the keyword that asked for samples. Rounding is monotonic, so
    the extremes of each train decide; ``ascending``: the trains are sorted (their ends are
    their extremes; a NaN sorts last and is caught too), else each is scanned once."""
    full = [u for u, t in enumerate(trains) if len(t)]
    if not full:
        return
    if ascending:
        lows = np.array([trains[u][0] for u in full], dtype=np.float64)
        highs = np.array([trains[u][-1] for u in full], dtype=np.float64)
    else:
        lows = np.array([np.min(trains[u]) for u in full], dtype=np.float64)
        highs = np.array([np.max(trains[u]) for u in full], dtype=np.float64)
    for values, pick in ((lows, np.argmin), (highs, np.argmax)):
        i = int(pick(values))  # the first NaN, if any
        _check_sample(values[i], fs_Hz, offset, what, f"unit {full[i]}")


def check_times_fit(times, fs_Hz: float, *, what: str, where: str) -> None:
    """:func:`check_samples_fit` for one array of times (ms), e.g. ``raw_time``."""
    times = np.asarray(times, dtype=np.float64).reshape(-1)
    if times.size:
        for pick in (np.argmin, np.argmax):
            _check_sample(times[int(pick(times))], fs_Hz, 0, what, where)


def unit_to_ms(values: np.ndarray, unit: str, fs_Hz: float | None = None) -> np.ndarray:
    """Convert times in ``unit`` (ms, s or samples at ``fs_Hz`` Hz) to float64 ms."""
    values = np.asarray(values)
    if unit == "ms":
        return values.astype(np.float64, copy=False)
    if unit == "s":
        return values.astype(np.float64, copy=False) * 1000.0
    if unit == "samples":
        if fs_Hz is None:
            raise LoadError("times in samples need fs_Hz (Hz) to be converted to ms")
        return values.astype(np.float64) * (1000.0 / float(fs_Hz))
    raise LoadError(f"unknown time unit {unit!r}; expected one of {', '.join(TIME_UNITS)}")


def clip_to_recording(train: list[np.ndarray], start_ms: float, length_ms: float | None) -> None:
    """Clip converted spike times (ms) into ``[start, start+length]`` in place.

    Rounding to samples (half a sample) or the s -> ms conversion (one ulp) can move a spike
    recorded at the very edge of the recording just outside it.
    """
    if length_ms is None:
        return
    hi = start_ms + length_ms
    for t in train:
        if t.size and (t[0] < start_ms or t[-1] > hi):
            np.clip(t, start_ms, hi, out=t)
