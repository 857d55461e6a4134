"""Shared pieces of the exporters and loaders: errors, time units, atomic writes."""

from __future__ import annotations

import contextlib
import glob
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

TIME_UNITS = ("ms", "s", "samples")
BLOCK_SPIKES = 1 << 19  # spikes per block when streaming flat arrays (4 MB of float64)


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


def convert_pieces(
    pieces: Sequence[np.ndarray],
    unit: str,
    fs_Hz: float | None,
    buf: np.ndarray,
    ints: np.ndarray,
    offset_ms: float = 0.0,
    total: int | None = None,
) -> np.ndarray:
    """The concatenation of ``pieces`` (float64 ms) converted to ``unit``, bit-identical to
    ``ms_to_unit(times - offset_ms, unit)`` (``offset_ms``: s only), built in ``buf``
    (float64) and, for samples, ``ints`` (int64); returns a view of one of them. ``total``:
    the number of spikes in ``pieces``, if known.

    Long pieces are converted as they are copied (one pass over the data); many short ones
    are copied first, then converted at once (a numpy call costs ~1 us per piece).
    """
    if unit not in TIME_UNITS:
        raise ExportError(f"unknown time unit {unit!r}")
    if total is None:
        total = sum(p.size for p in pieces)
    out = buf[:total]
    if len(pieces) * 4096 > total:
        if pieces:
            np.concatenate(pieces, out=out)
        _scale_ms(out, unit, fs_Hz, offset_ms, out)
    else:
        at = 0
        for piece in pieces:
            _scale_ms(piece, unit, fs_Hz, offset_ms, out[at : at + piece.size])
            at += piece.size
    if unit != "samples":
        return out
    values = ints[:total]
    values[...] = np.rint(out, out=out)  # the same unsafe cast as astype(np.int64)
    return values


def _scale_ms(src: np.ndarray, unit: str, fs_Hz, offset_ms: float, out: np.ndarray) -> None:
    """``out = src`` converted to s (``(src - offset_ms) / 1000``), ms, or samples before
    rounding (``src * fs_Hz / 1000``), with the operations of :func:`ms_to_unit`."""
    if unit == "s":
        if offset_ms:
            src = np.subtract(src, offset_ms, out=out)
        np.divide(src, 1000.0, out=out)
    elif unit == "samples":
        np.multiply(src, fs_Hz / 1000.0, out=out)
    elif src is not out:
        out[...] = src


def flat_blocks(
    trains: Sequence[np.ndarray], block: int | None = None
) -> Iterator[tuple[int, list[tuple[int, np.ndarray]]]]:
    """Split the unit-major concatenation of ``trains`` into blocks of ``block`` spikes
    (default :data:`BLOCK_SPIKES`).

    Yields ``(start, pieces)``: ``pieces`` are ``(unit index, view)`` pairs in unit order whose
    concatenation is ``flat[start:start + sum of sizes]``. Every block but the last holds
    exactly ``block`` spikes; a unit longer than the room left is split; empty units add
    nothing and no empty block is yielded.
    """
    block = block or BLOCK_SPIKES
    start, size, pieces = 0, 0, []
    for unit, train in enumerate(trains):
        lo, n = 0, len(train)
        while lo < n:
            take = min(block - size, n - lo)
            pieces.append((unit, train[lo : lo + take]))
            lo += take
            size += take
            if size == block:
                yield start, pieces
                start, size, pieces = start + size, 0, []
    if pieces:
        yield start, pieces


def converted_blocks(
    trains: Sequence[np.ndarray],
    unit: str,
    fs_Hz: float | None = None,
    block: int | None = None,
    offset_ms: float = 0.0,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start, values)``: ``ms_to_unit(np.concatenate(trains), unit, fs_Hz)[start:]``
    block by block (see :func:`flat_blocks`; ``offset_ms`` as in :func:`convert_pieces`),
    values bit-identical to :func:`ms_to_unit`.

    ``values`` lives in a buffer that the next block reuses, so the whole concatenation is
    never held in memory: write each block out before advancing.
    """
    buf = ints = None
    for start, pieces in flat_blocks(trains, block):
        if buf is None:  # the first block is the largest
            size = sum(p.size for _, p in pieces)
            buf = np.empty(size, dtype=np.float64)
            ints = np.empty(size if unit == "samples" else 0, dtype=np.int64)
        views = [p for _, p in pieces]
        yield start, convert_pieces(views, unit, fs_Hz, buf, ints, offset_ms)


def unit_index_blocks(
    trains: Sequence[np.ndarray], block: int | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start, index)``: the unit index (int64) of every spike, unit-major, block by
    block like :func:`converted_blocks` (``index`` is a reused buffer)."""
    buf = None
    for start, pieces in flat_blocks(trains, block):
        if buf is None:
            buf = np.empty(sum(p.size for _, p in pieces), dtype=np.int64)
        size = 0
        for unit, piece in pieces:
            buf[size : size + piece.size] = unit
            size += piece.size
        yield start, buf[:size]


def write_hdf5_block(dset, start: int, values: np.ndarray) -> None:
    """``dset[start:start + values.size] = values`` for a 1-D h5py dataset, through h5py's
    low-level API (less overhead per call); ``values``: contiguous, of the dataset's dtype."""
    from h5py import h5s

    space = dset.id.get_space()
    space.select_hyperslab((start,), (values.size,))
    dset.id.write(h5s.create_simple((values.size,)), space, values)


def write_hdf5_times(dset, trains, unit: str, fs_Hz=None, offset_ms: float = 0.0) -> None:
    """Fill the 1-D dataset ``dset`` with the unit-major spike times converted to ``unit``
    (see :func:`converted_blocks`), block by block; blocks of a chunked dataset hold whole
    chunks, so no chunk is written twice."""
    block = BLOCK_SPIKES
    if dset.chunks:
        block = max(1, block // dset.chunks[0]) * dset.chunks[0]
    for start, values in converted_blocks(trains, unit, fs_Hz, block, offset_ms):
        write_hdf5_block(dset, start, values)


def spikedata_or_load_error(where: str, train, **kwargs):
    """``SpikeData(train, **kwargs)``; a constructor rejection becomes a LoadError naming
    ``where`` (the file or folder read, and what was read of it)."""
    from spikelab.spikedata.spikedata import InvalidSpikeDataError, SpikeData

    try:
        return SpikeData(train, **kwargs)
    except InvalidSpikeDataError as exc:
        raise LoadError(f"{where}: {exc}") from None


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


_JSON_LEAVES = frozenset({str, int, float, bool, type(None)})


def json_safe(value: Any) -> Any:
    """Turn metadata/attributes into JSON-encodable values (numpy scalars and arrays to lists)."""
    # Plain leaves are kept without a call per item: attributes of 1000s of units are fast.
    if type(value) in _JSON_LEAVES:
        return value
    if isinstance(value, dict):
        return {str(k): v if type(v) in _JSON_LEAVES else json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [v if type(v) in _JSON_LEAVES else json_safe(v) for v in value]
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
