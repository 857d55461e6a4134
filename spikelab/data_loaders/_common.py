"""Shared pieces of the exporters and loaders: errors, time units, atomic writes."""

from __future__ import annotations

import contextlib
import glob
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

TIME_UNITS = ("ms", "s", "samples")


class ExportError(ValueError):
    """An export was asked with arguments that cannot work (raised before any file is opened)."""


class OutputInTheWayError(ExportError):
    """Something else (a folder where a file goes, or a file where a folder goes) occupies the
    output path; it is left alone. Not a fault of the data: remove it and export again."""


class LoadError(ValueError):
    """A file could not be read back as SpikeData; the message names the file and the fault."""


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


def _tmp_prefix(final: Path) -> str:
    return f".{final.name}.pid{os.getpid()}."


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(final: Path) -> None:
    """Remove temporaries of ``final`` left by writers that were killed (their pid is gone)."""
    try:
        siblings = list(final.parent.glob(f".{glob.escape(final.name)}.pid*.*"))
    except OSError:
        return
    for tmp in siblings:
        pid = tmp.name[len(final.name) + 5 :].split(".", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)) and tmp.suffix in (".tmp", ".old"):
            kept = tmp / final.name
            if tmp.suffix == ".old" and kept.exists() and not final.exists():
                os.replace(kept, final)  # killed mid-swap: put the previous output back
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    tmp.unlink()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _tmp_name(final: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix=_tmp_prefix(final), suffix=".tmp", dir=final.parent)
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual mode
    os.close(fd)
    return Path(name)


@contextlib.contextmanager
def atomic_file(filepath: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``filepath``; rename it over ``filepath`` on success.

    On any exception the temporary file is removed and an existing ``filepath`` is untouched.
    Parent directories are created.
    """
    final = Path(filepath)
    if final.is_dir():
        raise OutputInTheWayError(f"{final}: a directory is in the way of the output file")
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(final)
    tmp = _tmp_name(final)
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_directory(folder: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside ``folder``; put it in place of ``folder`` on success.

    An existing ``folder`` is replaced only once the new one is complete; on failure the
    temporary directory is removed and ``folder`` is untouched.
    """
    final = Path(folder)
    if final.exists() and not final.is_dir():
        raise OutputInTheWayError(f"{final}: a file is in the way of the output folder")
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(final)
    tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(final), suffix=".tmp", dir=final.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes 0700; outputs get the usual mode
    try:
        yield tmp
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=_tmp_prefix(final), suffix=".old", dir=final.parent))
            os.replace(final, old / final.name)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def json_safe(value: Any) -> Any:
    """Turn metadata/attributes into JSON-encodable values (numpy scalars and arrays to lists)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


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
