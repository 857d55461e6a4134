"""Pickle I/O: a loader for untrusted SpikeData pickles, and atomic pickling.

An untrusted pickle is loaded in three steps, each refusing what it can on its own:

1. :func:`scan_pickle` reads the opcode stream without building anything: it simulates the
   unpickler's stack and memo and refuses streams that nest too deeply, make too many objects,
   declare payloads larger than the file, change an object after it was placed in another, or
   use opcodes a SpikeData pickle never needs. Payloads (array data) are seeked over, not read.
2. :class:`SafeUnpickler` (the pure-Python unpickler with its opcode table restricted) builds
   only what a SpikeData pickle holds: numpy arrays through numpy's own reconstruction path
   with their size and dtype checked, numpy dtypes and scalars of numeric (and fixed-width
   text) types, builtin containers and scalars, dates, and the SpikeData itself, each call in
   the one form a pickler writes.
3. The finished SpikeData is validated after unpickling ends (so nothing in the stream can
   change it afterwards): its state must be complete, its trains valid, and its metadata and
   neuron attributes plain data (iteratively walked, depth and size bounded).

The scanner and its bounds are in :mod:`~spikelab.formats.pickle_scan`, the unpickler in
:mod:`~spikelab.formats.pickle_unpickler`.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from spikelab.formats.atomic import atomic_file
from spikelab.formats.errors import ExportError, LoadError
from spikelab.formats.failure_record import refuse_open_file
from spikelab.formats.files import open_regular
from spikelab.formats.pickle_scan import ScanReport, UnsafePickleError, corrupt, scan_pickle
from spikelab.formats.pickle_unpickler import SafeUnpickler
from spikelab.formats.registry import Format, ResourceModel
from spikelab.spikedata.spikedata import (
    InvalidSpikeDataError,
    SpikeData,
    validate_finished,
)

__all__ = [
    "UnsupportedObjectError",
    "UnsafePickleError",
    "SafeUnpickler",
    "ScanReport",
    "scan_pickle",
    "load_spikedata_from_pickle",
    "export_to_pickle",
    "FORMAT",
]


class UnsupportedObjectError(ExportError, TypeError):
    """:func:`export_to_pickle` was given something other than a SpikeData: an ExportError
    that is also the ``TypeError`` SpikeLab 0.1.2 raises."""


# ------------------------------------------------------------------------------ the loader
def _exception_text(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:
        return "?"
    text = " ".join(text.split())  # one line
    return text if len(text) <= 200 else text[:200] + "..."


def _read_local_spikedata(
    path: Path, *, source: str, trusted: bool, allow_globals: Iterable[str]
) -> SpikeData:
    allow_globals = list(allow_globals)
    # Only a regular file is opened (a FIFO or a device would block or never end).
    with open_regular(path, source) as (fd, size):
        if size == 0:
            raise LoadError(f"{source}: the file is empty (0 bytes), not a SpikeData pickle")
        refuse_open_file(fd, size, source, "a SpikeData pickle")
        with open(fd, "rb", buffering=0, closefd=False) as raw:
            try:
                obj = _load(raw, source=source, trusted=trusted, allow_globals=allow_globals)
            except (UnsafePickleError, LoadError, OSError):
                raise  # already name the file (OSError: a fault of the disk, not of the data)
            except InvalidSpikeDataError as exc:
                raise LoadError(f"{source}: invalid SpikeData: {exc}") from None
            except (EOFError, pickle.UnpicklingError) as exc:
                raise corrupt(source, _exception_text(exc) or "unexpected end") from None
            except MemoryError:
                raise LoadError(
                    f"{source}: corrupt pickle (asks for more memory than exists)"
                ) from None
            except RecursionError:
                raise LoadError(
                    f"{source}: corrupt pickle (RecursionError: nested too deeply)"
                ) from None
            except Exception as exc:  # whatever else the data provokes: one LoadError
                raise LoadError(
                    f"{source}: corrupt pickle ({type(exc).__name__}: {_exception_text(exc)})"
                ) from None
    if not isinstance(obj, SpikeData):
        raise LoadError(
            f"{source}: the pickle holds a {type(obj).__module__}.{type(obj).__qualname__}, "
            "not a SpikeData"
        )
    return obj


def _load(raw: Any, *, source: str, trusted: bool, allow_globals: list[str]) -> Any:
    """Scan, unpickle and validate the open file ``raw`` (or, trusted, ``pickle.load`` it and
    validate the SpikeData it holds)."""
    before = os.fstat(raw.fileno())
    if trusted:  # explicit, documented opt-in for trusted files
        obj = pickle.load(io.BufferedReader(raw, buffer_size=1 << 20))
        if isinstance(obj, SpikeData):
            validate_finished(obj)
        return obj
    scan_pickle(raw, before.st_size, source=source)
    raw.seek(0)
    reader = io.BufferedReader(raw, buffer_size=1 << 20)
    obj = SafeUnpickler(
        reader, source=source, extra_globals=allow_globals, size=before.st_size
    ).load()
    if isinstance(obj, SpikeData) and type(obj) is not SpikeData:  # an allowed subclass
        validate_finished(obj)
    after = os.fstat(raw.fileno())
    if (after.st_size, after.st_mtime_ns, after.st_ino) != (
        before.st_size,
        before.st_mtime_ns,
        before.st_ino,
    ):
        raise LoadError(f"{source}: the file changed while it was read; load it once complete")
    return obj


def load_spikedata_from_pickle(
    filepath: str | os.PathLike,
    *,
    allow_remote: bool = False,
    trusted: bool = False,
    allow_globals: Iterable[str] = (),
    aws_access_key_id: str | None = None,
    aws_secret_access_key: str | None = None,
    aws_session_token: str | None = None,
    region_name: str | None = None,
    endpoint_url: str | None = None,
) -> SpikeData:
    """Load a SpikeData pickle (local path or, with ``allow_remote=True``, an ``s3://`` URL).

    The file is scanned (:func:`scan_pickle`), unpickled with :class:`SafeUnpickler` (only
    SpikeData, numpy arrays and builtin containers may be built, each in the form a pickler
    writes) and the finished SpikeData validated. ``trusted=True`` uses plain ``pickle.load``
    instead (only for files you trust: a pickle can run any code) and still validates the
    SpikeData; ``allow_globals`` allows named extra globals. Every refusal is an
    :class:`UnsafePickleError` or a :class:`LoadError` naming the file. Times are in ms.
    """
    from spikelab import s3 as s3_utils

    source = os.fspath(filepath)
    if s3_utils.is_s3_url(source):
        if not allow_remote:
            raise LoadError(f"{source}: remote pickles need allow_remote=True")
        with tempfile.TemporaryDirectory(prefix="spikelab-s3-") as tmp:
            local = Path(tmp) / "download.pkl"
            s3_utils.download_from_s3(
                source,
                local,
                aws_access_key_id=aws_access_key_id,
                aws_secret_access_key=aws_secret_access_key,
                aws_session_token=aws_session_token,
                region_name=region_name,
                endpoint_url=endpoint_url,
            )
            return _read_local_spikedata(
                local, source=source, trusted=trusted, allow_globals=allow_globals
            )
    return _read_local_spikedata(
        Path(source), source=source, trusted=trusted, allow_globals=allow_globals
    )


class _GatheringWriter:
    """Write-only file for ``pickle.dump`` that collects the pickler's pieces (small frames and
    whole array buffers, referenced, not copied) and hands them to the OS in few ``os.writev``
    calls.

    A buffered file makes one or two write calls per array: with 1000s of units their cost
    (~10 us each on ext4) doubles the time of writing the bytes themselves. The object being
    pickled must not change during the dump.
    """

    MAX_PIECES = 1024  # pieces per call at most (lowered to the system's IOV_MAX below)
    MAX_BYTES = 4 << 20  # bytes per call at most: bounds the frames kept; fastest measured

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._pieces: list[Any] = []
        self._size = 0
        with contextlib.suppress(AttributeError, ValueError, OSError):
            iov_max = os.sysconf("SC_IOV_MAX")
            if iov_max > 0:
                self.MAX_PIECES = min(self.MAX_PIECES, iov_max)

    def write(self, data: Any) -> int:
        size = memoryview(data).nbytes
        self._pieces.append(data)
        self._size += size
        if len(self._pieces) >= self.MAX_PIECES or self._size >= self.MAX_BYTES:
            self.flush()
        return size

    def flush(self) -> None:
        pieces, size = self._pieces, self._size
        self._pieces, self._size = [], 0
        while size:
            done = os.writev(self._fd, pieces)
            if done <= 0:
                raise OSError(f"no byte written of {size} (file descriptor {self._fd})")
            if done < size:  # a short write (e.g. over 2 GiB at once): resume byte-exactly
                pieces = _unwritten(pieces, done)
            size -= done


def _unwritten(pieces: list[Any], done: int) -> list[memoryview]:
    """What remains of ``pieces`` (bytes-like objects or PickleBuffers) after ``done`` bytes."""
    views = [
        p.raw() if isinstance(p, pickle.PickleBuffer) else memoryview(p).cast("B") for p in pieces
    ]
    i = 0
    while done >= views[i].nbytes:
        done -= views[i].nbytes
        i += 1
    return [views[i][done:], *views[i + 1 :]]


def _dump(obj: Any, path: str | os.PathLike, protocol: int) -> None:
    """Pickle ``obj`` into a new file at ``path`` (mode 0666 & ~umask) with few system calls."""
    if not hasattr(os, "writev"):  # not on Windows
        with open(path, "wb") as fh:
            pickle.dump(obj, fh, protocol=protocol)
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        out = _GatheringWriter(fd)
        pickle.dump(obj, out, protocol=protocol)
        out.flush()
    finally:
        os.close(fd)


def export_to_pickle(
    obj: Any,
    filepath: str | os.PathLike,
    *,
    protocol: int | None = None,
    s3_upload: bool = False,
    aws_access_key_id: str | None = None,
    aws_secret_access_key: str | None = None,
    aws_session_token: str | None = None,
    region_name: str | None = None,
    endpoint_url: str | None = None,
    uploader: Callable[..., Any] | None = None,
) -> str:
    """Pickle the SpikeData ``obj`` atomically to ``filepath`` and return the path (or the
    ``s3://`` URL).

    Local files are written to a temporary name and renamed, so a failed dump leaves any
    previous file intact. With ``s3_upload=True``, ``filepath`` is an ``s3://bucket/key`` URL:
    the object is pickled to a local temporary file, uploaded (multipart for large files) and
    the temporary file removed, whether the upload succeeds or not. Credentials default to
    boto3's chain (environment, shared files, instance role); ``endpoint_url`` (or
    ``AWS_ENDPOINT_URL``) selects an S3-compatible store. ``protocol`` defaults to
    ``pickle.HIGHEST_PROTOCOL``. ``uploader(local_path: str, url, **credentials)`` replaces
    :func:`spikelab.s3.upload_to_s3` for the upload (``endpoint_url`` is passed only when
    given). Anything but a SpikeData raises :class:`UnsupportedObjectError` (a TypeError).
    """
    from spikelab import s3 as s3_utils

    if not isinstance(obj, SpikeData):
        raise UnsupportedObjectError(
            f"Expected a spikelab data object (SpikeData), got {type(obj).__name__}"
        )
    if protocol is None:
        protocol = pickle.HIGHEST_PROTOCOL
    if (
        isinstance(protocol, bool)
        or not isinstance(protocol, int)
        or not -1 <= protocol <= pickle.HIGHEST_PROTOCOL
    ):
        raise ExportError(
            f"protocol must be an integer from 0 to {pickle.HIGHEST_PROTOCOL}, got {protocol!r}"
        )
    target = os.fspath(filepath)
    remote = s3_utils.is_s3_url(target)
    if s3_upload and not remote:
        raise ExportError(
            f"s3_upload=True needs an S3 URL (s3://bucket/key) as filepath, got {target!r}"
        )
    if remote and not s3_upload:
        raise ExportError(f"{target}: writing to an s3:// URL needs s3_upload=True")
    if not remote:
        with atomic_file(target) as tmp:
            _dump(obj, tmp, protocol)
        return target
    s3_utils.parse_s3_url(target)  # validate before pickling
    with tempfile.TemporaryDirectory(prefix="spikelab-upload-") as tmp:
        local = Path(tmp) / "upload.pkl"
        _dump(obj, local, protocol)
        credentials = dict(
            aws_access_key_id=aws_access_key_id,
            aws_secret_access_key=aws_secret_access_key,
            aws_session_token=aws_session_token,
            region_name=region_name,
        )
        if endpoint_url is not None:
            credentials["endpoint_url"] = endpoint_url
        (uploader or s3_utils.upload_to_s3)(str(local), target, **credentials)
    return target


# --------------------------------------------------------------------------- registry entry
class PickleFormat(Format):
    """A SpikeData pickle, read back with the restricted unpickler (or the job's opt-ins)."""

    name = "pickle"
    description = "SpikeData pickle (SpikeLab's own format), written atomically"
    extension = ".pkl"
    option_keys = ("protocol",)
    resources = ResourceModel(base_mem_mb=300)

    def writer(self):
        return export_to_pickle

    def reader(self):
        return load_spikedata_from_pickle

    def reader_kwargs(self, options, fs_Hz, *, pickle_loading=None):
        loading = dict(pickle_loading or {})
        return {k: loading[k] for k in ("trusted", "allow_globals") if k in loading}

    input_suffixes = (".pkl",)

    def input_kwargs(self, path, read_options, fs_Hz, default_fs_Hz, *, pickle_loading=None):
        return self.reader_kwargs({}, fs_Hz, pickle_loading=pickle_loading)


FORMAT = PickleFormat()
