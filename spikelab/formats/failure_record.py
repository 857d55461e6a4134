"""Failure records: what the workflow leaves at a recording's output path when that recording
cannot be converted, and how every loader recognises one.

Snakemake requires every output a job declares to exist when the job succeeds, so an export job
that keeps its good recordings (``on_bad_recording: continue``) must put *something* at the path
of a bad one. It puts a small UTF-8 text file there (for a folder output such as KiloSort, a
folder holding only :data:`DIR_FILE`), whose first line is :data:`MARKER`::

    SPIKELAB EXPORT FAILED
    recording: bad
    source: example/recordings/bad.pkl
    target: nwb
    error: LoadError: example/recordings/bad.pkl: not a readable pickle (...)
    ...

No loader reads it as data: each checks for the marker (the HDF5 and NWB loaders only once the
file turned out not to be HDF5; the pickle loader before unpickling; the KiloSort loader before
reading the folder) and raises :class:`~spikelab.formats.errors.FailureRecordError` (a
LoadError) saying what the file is, which export failed and why.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from spikelab.formats.errors import FailureRecordError

__all__ = [
    "MARKER",
    "DIR_FILE",
    "MAX_BYTES",
    "FailureRecord",
    "record_text",
    "parse_record",
    "read_failure_record",
    "refuse",
    "refuse_open_file",
    "refuse_folder",
]

#: First line of every failure record.
MARKER = "SPIKELAB EXPORT FAILED"
#: The file inside a failure record of a folder output.
DIR_FILE = "EXPORT_FAILED.txt"
#: A failure record is small; a bigger file is never taken for one.
MAX_BYTES = 1 << 16


@dataclass(frozen=True)
class FailureRecord:
    """What a failure record says: the recording, its source, the target and the error."""

    recording: str = ""
    source: str = ""
    target: str = ""
    error: str = "export failed"


def record_text(record: FailureRecord, fix: str = "Fix or remove the source") -> str:
    """The text of a failure record (see the module docstring); ``fix`` says what to do (a
    sentence without its final period)."""
    return (
        f"{MARKER}\n"
        f"recording: {record.recording}\n"
        f"source: {record.source}\n"
        f"target: {record.target}\n"
        f"error: {record.error}\n"
        "This is a failure record, not an output: the export of this recording failed, and the "
        f"workflow keeps this placeholder where the output would be. No loader reads it. {fix} "
        "and run snakemake again (a record whose recording is gone is listed "
        "by `snakemake list_stale` and removed by `snakemake clean_stale`).\n"
    )


def parse_record(data: bytes) -> FailureRecord | None:
    """The record in ``data`` (a file's first bytes), or None when it is not one."""
    if not data.startswith(MARKER.encode()) or len(data) > MAX_BYTES:
        return None
    fields = {}
    for line in data.decode("utf-8", "replace").splitlines()[1:]:
        key, sep, value = line.partition(": ")
        if sep and key in ("recording", "source", "target", "error") and key not in fields:
            fields[key] = value
    return FailureRecord(**fields)


def _read_small_regular(path: Path) -> bytes | None:
    """Up to MAX_BYTES + 1 bytes of ``path`` if it is a regular file (symlinks are not
    followed: a record is never a link); None otherwise."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_BYTES:
        return None
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, MAX_BYTES + 1)
    except OSError:
        return None
    finally:
        os.close(fd)


def read_failure_record(path: str | os.PathLike) -> FailureRecord | None:
    """The failure record at ``path`` (a file, or a folder holding :data:`DIR_FILE`), or None
    when there is none."""
    p = Path(path)
    try:
        is_dir = stat.S_ISDIR(os.lstat(p).st_mode)
    except OSError:
        return None
    data = _read_small_regular(p / DIR_FILE if is_dir else p)
    return None if data is None else parse_record(data)


def refuse(record: FailureRecord, source: str, what: str) -> FailureRecordError:
    """The error a loader raises for ``record`` found at ``source`` instead of ``what`` (e.g.
    "an NWB file")."""
    of = f"the {record.target} export" if record.target else "an export"
    if record.recording:
        of += f" of recording {record.recording!r}"
    if record.source:
        of += f" ({record.source})"
    return FailureRecordError(
        f"{source}: this is a failure record of {of}, not {what}: the export failed with "
        f"{record.error}. Fix or remove that source and run the workflow again"
    )


def refuse_open_file(fd: int, size: int, source: str, what: str) -> None:
    """Raise :class:`FailureRecordError` when the open regular file ``fd`` (``size`` bytes) is
    a failure record; ``what`` names what the loader expected (e.g. "a SpikeData pickle")."""
    if size > MAX_BYTES or os.pread(fd, len(MARKER), 0) != MARKER.encode():
        return
    record = parse_record(os.pread(fd, MAX_BYTES + 1, 0))
    if record is not None:
        raise refuse(record, source, what)


def refuse_folder(folder: str | os.PathLike, source: str, what: str) -> None:
    """Raise :class:`FailureRecordError` when ``folder`` is the failure record of a folder
    output (it holds :data:`DIR_FILE`, a regular file starting with :data:`MARKER`)."""
    data = _read_small_regular(Path(folder) / DIR_FILE)
    record = None if data is None else parse_record(data)
    if record is not None:
        raise refuse(record, source, what)
