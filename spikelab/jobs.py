"""What every batch job shares (export, verify, report figures): logging, reading a source
recording, which errors are the fault of one recording, their one-line descriptions, failure
records at output paths, and the loop that applies the "on bad recording" policy.

A recording whose own data is at fault (an unreadable, unsafe or invalid input, or an export
the recording cannot satisfy, such as KiloSort without a sampling rate) does not stop its batch:

- ``on_bad_recording="continue"`` (default): the other recordings are processed, and the job
  leaves a record of the failure where the recording's output would be (a failure stub, a
  figure saying so, an ``unreadable`` verify result). The job succeeds, so Snakemake keeps the
  good outputs; the final ``check`` fails the run naming every bad file.
- ``on_bad_recording="fail"``: the other recordings are processed, then the job fails with a
  :class:`BatchError` naming every bad recording.

Any other error (a bug, a full disk, a missing library) fails the job at once, with a note
naming the recording being processed.
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from spikelab.formats.atomic import atomic_directory, atomic_file
from spikelab.formats.errors import (
    ExportError,
    LoadError,
    MissingSamplingRateError,
    OutputInTheWayError,
)
from spikelab.spikedata.spikedata import InvalidSpikeDataError

__all__ = [
    "ON_BAD_RECORDING",
    "DATA_FAULTS",
    "NOT_DATA_FAULTS",
    "STUB_MARKER",
    "STUB_FILE",
    "BatchError",
    "Fault",
    "setup_logging",
    "describe_error",
    "output_size",
    "load_source",
    "write_failure_stub",
    "read_failure_stub",
    "for_each_recording",
]

ON_BAD_RECORDING = ("continue", "fail")

#: Errors that mean "this recording cannot be processed", not "the job is broken".
DATA_FAULTS: tuple[type[BaseException], ...] = (
    LoadError,
    ExportError,
    InvalidSpikeDataError,
    pickle.UnpicklingError,  # includes UnsafePickleError
    FileNotFoundError,
    MissingSamplingRateError,
)
#: ... except these, which are faults of the output folder, not of the recording.
NOT_DATA_FAULTS: tuple[type[BaseException], ...] = (OutputInTheWayError,)

#: First line of a failure stub: a small text file (for a folder output, a folder holding
#: :data:`STUB_FILE`) standing where a recording's output would be.
STUB_MARKER = "SPIKELAB EXPORT FAILED"
STUB_FILE = "EXPORT_FAILED.txt"  # inside a failed folder output

log = logging.getLogger("spikelab.jobs")


class BatchError(RuntimeError):
    """Some recordings of a batch could not be processed (``on_bad_recording="fail"``)."""


class Item(Protocol):
    """One recording of a batch job: at least its name and its source."""

    recording: str
    source: str


ItemT = TypeVar("ItemT", bound=Item)
ResultT = TypeVar("ResultT")


@dataclass(frozen=True)
class Fault:
    """A recording that could not be processed: ``error`` is one line naming the source."""

    recording: str
    source: str
    error: str
    exception: BaseException


def setup_logging(log_path: str | os.PathLike | None, *, stderr_level: int = logging.ERROR):
    """Log INFO and up to ``log_path`` (one line per event), errors also to stderr.

    Python warnings (e.g. an exporter's) are routed into the log file.
    """
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    if log_path is not None:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(log_path, mode="w", encoding="utf-8")
        fh.setFormatter(fmt)
        root.addHandler(fh)
    err = logging.StreamHandler(sys.stderr)
    err.setLevel(stderr_level)
    err.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    root.addHandler(err)
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").propagate = False
    if log_path is not None:
        logging.getLogger("py.warnings").addHandler(fh)
    return root


def describe_error(exc: BaseException) -> str:
    """``"<Type>: <message on one line>"``."""
    text = str(exc).strip() or "(no message)"
    return f"{type(exc).__name__}: {' '.join(text.split())}"


def output_size(path: str | os.PathLike) -> int:
    """Size in bytes of a file, or of all files in a folder."""
    p = Path(path)
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return p.stat().st_size


def load_source(source: str | os.PathLike, pickle_loading: Mapping[str, Any] | None = None):
    """Read a job's input recording (a SpikeData pickle) as SpikeData (times in ms).

    ``pickle_loading`` holds ``load_spikedata_from_pickle``'s opt-ins (``trusted``,
    ``allow_globals``) for sources the user trusts; default: the restricted loader.
    """
    from spikelab.formats.pickle_io import load_spikedata_from_pickle

    loading = {k: v for k, v in (pickle_loading or {}).items() if k in ("trusted", "allow_globals")}
    return load_spikedata_from_pickle(source, **loading)


def write_failure_stub(
    path: str | os.PathLike,
    *,
    is_dir: bool,
    recording: str,
    source: str,
    target: str,
    error: str,
) -> None:
    """Write a failure stub at ``path`` (atomically): a text file, or a folder holding
    :data:`STUB_FILE` when the output is a folder (``is_dir``)."""
    text = (
        f"{STUB_MARKER}\n"
        f"recording: {recording}\n"
        f"source: {source}\n"
        f"target: {target}\n"
        f"error: {error}\n"
        "This placeholder stands where the output would be. Fix or remove the source and "
        "run snakemake again.\n"
    )
    if is_dir:
        with atomic_directory(path) as tmp:
            (tmp / STUB_FILE).write_text(text, encoding="utf-8")
    else:
        with atomic_file(path) as tmp:
            Path(tmp).write_text(text, encoding="utf-8")


def read_failure_stub(path: str | os.PathLike) -> str | None:
    """The error recorded in a failure stub at ``path``, or None if it is not a stub."""
    p = Path(path)
    if p.is_dir():
        p = p / STUB_FILE
        if not p.is_file():
            return None
    elif not p.is_file() or p.stat().st_size > 1 << 16:
        return None
    with open(p, "rb") as fh:
        head = fh.read(len(STUB_MARKER))
        if head != STUB_MARKER.encode():
            return None
        text = (head + fh.read()).decode("utf-8", "replace")
    for line in text.splitlines():
        if line.startswith("error: "):
            return line[len("error: ") :]
    return "export failed"


def for_each_recording(
    items: Sequence[ItemT],
    work: Callable[[ItemT], ResultT],
    *,
    on_fault: Callable[[ItemT, Fault, bool], ResultT],
    on_bad_recording: str = "continue",
    context: Callable[[ItemT], str],
    failed: str,
    error_type: type[BatchError] = BatchError,
    finish: Callable[[list[ResultT]], None] | None = None,
) -> list[ResultT]:
    """``[work(item) for item in items]``, where a data fault of one recording
    (:data:`DATA_FAULTS`) does not stop the others.

    A faulty item's result is ``on_fault(item, fault, keep_going)``; ``keep_going`` is True
    under ``on_bad_recording="continue"`` (leave a record of the failure in place of the
    output). Under ``"fail"``, :class:`BatchError` (or ``error_type``) is raised after the last
    item: ``"<failed>: <n> of <m> recordings ..."``-style text is built from ``failed``, e.g.
    ``"nwb: {bad} of {total} recordings could not be converted"``. ``finish(results)`` runs
    after the last item (before that error). Any other exception gets the note
    ``context(item)`` and is raised at once.
    """
    if on_bad_recording not in ON_BAD_RECORDING:
        raise ValueError(
            f"on_bad_recording must be one of {ON_BAD_RECORDING}, got {on_bad_recording!r}"
        )
    keep_going = on_bad_recording == "continue"
    results: list[ResultT] = []
    faults: list[Fault] = []
    for item in items:
        try:
            result = work(item)
        except DATA_FAULTS as exc:
            if isinstance(exc, NOT_DATA_FAULTS):
                exc.add_note(context(item))
                raise
            error = describe_error(exc)
            if item.source not in error:
                error = f"{item.source}: {error}"
            fault = Fault(item.recording, item.source, error, exc)
            faults.append(fault)
            result = on_fault(item, fault, keep_going)
        except BaseException as exc:
            exc.add_note(context(item))
            raise
        results.append(result)
    if finish is not None:
        finish(results)
    if faults and not keep_going:
        raise error_type(
            failed.format(bad=len(faults), total=len(items))
            + " (on_bad_recording: fail):\n  - "
            + "\n  - ".join(f"{f.recording}: {f.error}" for f in faults)
        )
    return results
