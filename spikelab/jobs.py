"""What every batch job shares (export, verify, report figures): logging, reading a source
recording, which errors are the fault of one recording, their one-line descriptions, failure
records at output paths, and the loop that applies the "on bad recording" policy.

A recording whose own data is at fault (an unreadable, unsafe or invalid input, or an export
the recording cannot satisfy, such as KiloSort without a sampling rate) does not stop its batch:

- ``on_bad_recording="continue"`` (default): the other recordings are processed, and the job
  leaves a record of the failure where the recording's output would be (a failure record, a
  figure saying so, an ``unreadable`` verify result). The job succeeds, so Snakemake keeps the
  good outputs; the final ``check`` fails the run naming every bad file.
- ``on_bad_recording="fail"``: the other recordings are processed, then the job fails with a
  :class:`BatchError` naming every bad recording.

Any other error (a bug, a full disk, a missing library) fails the job at once, with a note
naming the recording being processed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from spikelab import isolation
from spikelab.formats import failure_record
from spikelab.formats.atomic import atomic_directory, atomic_file, temporaries_listed_once
from spikelab.formats.errors import (
    ExportError,
    LoadError,
    MissingSamplingRateError,
    OutputInTheWayError,
)
from spikelab.formats.registry import DEFAULT_INPUT_FORMAT, ResourceModel
from spikelab.isolation import Limits
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
    "SOURCE_FIX",
    "write_failure_stub",
    "read_failure_stub",
    "fault_is",
    "for_each_recording",
    "may_run_code",
    "RecordingLimits",
    "is_environment_fault",
    "EnvironmentFault",
    "Limits",
    "LOADING",
    "EXPORTING",
    "READING_OUTPUT",
    "COMPARING",
    "DRAWING",
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

#: First line of a failure record (a failure stub): a small text file (for a folder output, a
#: folder holding :data:`STUB_FILE`) standing where a recording's output would be; see
#: :mod:`spikelab.formats.failure_record`, which every loader uses to refuse one.
STUB_MARKER = failure_record.MARKER
STUB_FILE = failure_record.DIR_FILE  # inside a failed folder output

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
    """A recording that could not be processed: ``error`` is one line naming the source,
    ``description`` the same without the source, ``phase`` what the work was doing
    (``loading``, ``exporting``...); ``exception`` is what was raised (in-process) or the
    child's :class:`~spikelab.isolation.ChildFailure`."""

    recording: str
    source: str
    error: str
    exception: BaseException
    description: str = ""
    phase: str = ""


def setup_logging(log_path: str | os.PathLike | None, *, stderr_level: int | None = None):
    """Log INFO and up to ``log_path`` (one line per event); Python warnings (e.g. an
    exporter's) go there too.

    A job with a log file writes nothing to stderr (``stderr_level=None``): a bad recording is
    the log's business and the final ``check`` prints one line for it; an error that fails the
    job still reaches the terminal as its traceback, and Snakemake prints the log of a failed
    job (``show-failed-logs``). Without ``log_path``, or with ``stderr_level``, records of that
    level and up (default ERROR) also go to stderr.
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
    if log_path is None or stderr_level is not None:
        err = logging.StreamHandler(sys.stderr)
        err.setLevel(logging.ERROR if stderr_level is None else stderr_level)
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


def load_source(
    source: str | os.PathLike,
    pickle_loading: Mapping[str, Any] | None = None,
    *,
    source_format: str | None = None,
    read_options: Mapping[str, Any] | None = None,
    fs_Hz: float | None = None,
    default_fs_Hz: float | None = None,
):
    """Read a job's input recording, of format ``source_format`` (a registry name), as
    SpikeData (times in ms), with that format's reader.

    ``pickle_loading`` holds ``load_spikedata_from_pickle``'s opt-ins (``trusted``,
    ``allow_globals``) for sources the user trusts; default: the restricted loader.
    ``read_options`` are the reader keywords the user gave for the input (dataset names, ...);
    ``fs_Hz`` the sample sheet's rate (Hz), ``default_fs_Hz`` the config's, used only where
    the file gives none.
    """
    from spikelab.formats.registry import get_format

    path = os.fspath(source)
    fmt = get_format(source_format or DEFAULT_INPUT_FORMAT).input_reader(path, read_options or {})
    kwargs = fmt.input_kwargs(
        path, read_options or {}, fs_Hz, default_fs_Hz, pickle_loading=pickle_loading
    )
    return fmt.reader()(path, **kwargs)


#: What the log and the summary say of an output copied from its input.
COPIED_NOTE = "copied unchanged from the input (same format and options)"


def copy_unchanged(source: str, output: str) -> None:
    """Copy the file ``source`` to ``output`` atomically (an output that would be its input)."""
    with atomic_file(output) as tmp:
        shutil.copyfile(source, tmp)


class SourceOf:
    """Reading the input of a job item (a mixin: the item has ``source``, ``sheet_fs_Hz``,
    ``source_format`` and ``read_options``)."""

    def same_as(self, target: Any) -> bool:
        """True when the output would be this input itself (same format and options)."""
        source_format = self.source_format or DEFAULT_INPUT_FORMAT
        return source_format == target.format and target.spec.same_as_input(
            self.source, target.options
        )

    def load(self, pickle_loading, default_fs_Hz):
        """The source as SpikeData (times in ms), read with its format's reader."""
        return load_source(
            self.source,
            pickle_loading,
            source_format=self.source_format,
            read_options=dict(self.read_options),
            fs_Hz=self.sheet_fs_Hz,
            default_fs_Hz=default_fs_Hz,
        )


#: Least memory (MB) a recording's child may use, whatever the job's own estimate says.
MIN_RECORDING_MEMORY_MB = 256


@dataclass(frozen=True)
class RecordingLimits:
    """How a batch job isolates its recordings: ``memory_mb`` and ``seconds`` from the
    config's ``isolation`` block (None: derived, see :meth:`for_source`), ``job_mem_mb``,
    the memory the job asked its scheduler for, and ``per_child``."""

    memory_mb: float | None = None
    seconds: float | None = None
    job_mem_mb: float | None = None
    #: recordings one worker process takes before a fresh one is forked (None: until one
    #: fails or the worker has grown, see :mod:`spikelab.isolation`; 1: a child per recording)
    per_child: int | None = None

    @classmethod
    def from_params(
        cls, params: Mapping[str, Any] | None, job_mem_mb: float | None = None
    ) -> RecordingLimits | None:
        """From the ``isolation`` param (``enabled``, ``memory_mb``, ``seconds``; missing keys
        take their defaults) and the job's ``mem_mb`` resource; None when isolation is off."""
        params = dict(params or {})
        if not params.get("enabled", True):
            return None
        return cls(params.get("memory_mb"), params.get("seconds"), job_mem_mb)

    def for_source(self, source: str | os.PathLike, resources: ResourceModel) -> Limits:
        """The limits of the child converting ``source``.

        Memory: ``memory_mb`` when set, else what the job asked for (``job_mem_mb``) minus
        what the job itself holds, at least :data:`MIN_RECORDING_MEMORY_MB`; no limit when
        both are unknown. Time: ``seconds`` when set, else ``resources``' wall-time estimate
        for a job of this one recording (its size on disk).
        """
        memory_mb = self.memory_mb
        if memory_mb is None and self.job_mem_mb is not None:
            held = isolation.resident_mb() or 0.0
            memory_mb = max(float(self.job_mem_mb) - held, MIN_RECORDING_MEMORY_MB)
        seconds = self.seconds
        if seconds is None:
            try:
                size_mb = output_size(source) / 2**20
            except OSError:
                size_mb = 0.0
            seconds = resources.runtime_min([size_mb]) * 60.0
        return Limits(memory_mb=memory_mb, seconds=seconds)

    def per_child_for(self, pickle_loading: Mapping[str, Any] | None) -> int | None:
        """Recordings per worker process: ``per_child`` when set, else 1 when the pickle
        opt-ins (``trusted``, ``allow_globals``) let a source run code, which could leave state
        behind for the later recordings of its worker, else no limit."""
        if self.per_child is not None:
            return self.per_child
        return 1 if may_run_code(pickle_loading) else None


def may_run_code(pickle_loading: Mapping[str, Any] | None) -> bool:
    """True when the pickle opt-ins (``trusted``, ``allow_globals``) let a source run code."""
    loading = pickle_loading or {}
    return bool(loading.get("trusted") or loading.get("allow_globals"))


#: What to do about a fault of the source's data (the default of a failure stub).
SOURCE_FIX = "Fix or remove the source"


def write_failure_stub(
    path: str | os.PathLike,
    *,
    is_dir: bool,
    recording: str,
    source: str,
    target: str,
    error: str,
    fix: str = SOURCE_FIX,
) -> None:
    """Write a failure record at ``path`` (atomically): a text file, or a folder holding
    :data:`STUB_FILE` when the output is a folder (``is_dir``). ``fix`` says what to do
    (a sentence without its final period): :data:`SOURCE_FIX` for a fault of the data, the
    config value to set when the config is what is missing."""
    record = failure_record.FailureRecord(recording, source, target, error)
    text = failure_record.record_text(record, fix)
    if is_dir:
        with atomic_directory(path) as tmp:
            (tmp / STUB_FILE).write_text(text, encoding="utf-8")
    else:
        with atomic_file(path) as tmp:
            Path(tmp).write_text(text, encoding="utf-8")


def read_failure_stub(path: str | os.PathLike) -> str | None:
    """The error recorded in a failure record at ``path``, or None if it is not one."""
    record = failure_record.read_failure_record(path)
    return None if record is None else record.error


#: Phases of a recording's work, reported by :func:`spikelab.isolation.phase`; exceptions
#: other than data faults in a writing phase are the environment's (a full disk), not the
#: recording's.
LOADING, EXPORTING, READING_OUTPUT, COMPARING, DRAWING = (
    "loading",
    "exporting",
    "reading the output",
    "comparing",
    "drawing",
)
WRITING_PHASES = frozenset({EXPORTING, DRAWING})


class EnvironmentFault(RuntimeError):
    """An isolated recording's work failed for a reason outside the recording (a full disk, a
    read-only folder, something in the way of the output): the job fails, as it would
    in-process."""


def is_environment_fault(exc: BaseException, phase: str) -> bool:
    """True for faults of the output folder or the machine rather than of the recording."""
    if isinstance(exc, NOT_DATA_FAULTS):
        return True
    return (
        isinstance(exc, OSError)
        and not isinstance(exc, FileNotFoundError)
        and phase in WRITING_PHASES
    )


@temporaries_listed_once()
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
    isolate: Callable[[ItemT], Limits] | None = None,
    encode: Callable[[ResultT], Any] = lambda value: value,
    decode: Callable[[Any], ResultT] = lambda value: value,
    per_child: int | None = None,
    warm_up: Callable[[], None] | None = None,
) -> list[ResultT]:
    """``[work(item) for item in items]``, where the fault of one recording does not stop the
    others.

    In-process (``isolate=None``), a data fault (:data:`DATA_FAULTS`) is the recording's
    fault; any other exception is a bug of the job. With ``isolate``, the items' work runs in a
    forked worker process, ``work(item)`` under the limits ``isolate(item)`` gives
    (:func:`spikelab.isolation.run_each_isolated`: a worker takes item after item, and a fresh
    one takes over after a failure; ``per_child=1`` forks a child per item; results cross as
    JSON through ``encode`` and ``decode``), and whatever ends the work of an item — any
    exception, a crash, running out of memory or time — is the recording's fault, except an
    :func:`environment fault <is_environment_fault>`, which fails the job
    (:class:`EnvironmentFault`). ``warm_up()`` (the imports the work needs) runs in this process
    before it forks any worker but the first.

    A faulty item's result is ``on_fault(item, fault, keep_going)``; ``keep_going`` is True
    under ``on_bad_recording="continue"`` (leave a record of the failure in place of the
    output). Under ``"fail"``, :class:`BatchError` (or ``error_type``) is raised after the last
    item: ``"<failed>: <n> of <m> recordings ..."``-style text is built from ``failed``, e.g.
    ``"nwb: {bad} of {total} recordings could not be converted"``. ``finish(results)`` runs
    after the last item (before that error). Errors that fail the job get the note
    ``context(item)``.

    Each output folder is listed once for stale temporaries (:func:`temporaries_listed_once`).
    """
    if on_bad_recording not in ON_BAD_RECORDING:
        raise ValueError(
            f"on_bad_recording must be one of {ON_BAD_RECORDING}, got {on_bad_recording!r}"
        )
    keep_going = on_bad_recording == "continue"
    isolated = isolate is not None and isolation.available()
    results: list[ResultT] = []
    faults: list[Fault] = []

    def record(item: ItemT, fault: Fault) -> None:
        faults.append(fault)
        results.append(on_fault(item, fault, keep_going))

    if not isolated:
        for item in items:
            isolation.phase(LOADING)
            try:
                result = work(item)
            except DATA_FAULTS as exc:
                if isinstance(exc, NOT_DATA_FAULTS):
                    exc.add_note(context(item))
                    raise
                text, phase = describe_error(exc), isolation.current_phase()
                record(
                    item,
                    Fault(item.recording, item.source, _fault_text(text, item), exc, text, phase),
                )
                continue
            except BaseException as exc:
                exc.add_note(context(item))
                raise
            results.append(result)
    else:

        def limits(index: int) -> Limits:
            try:
                return isolate(items[index])
            except BaseException as exc:
                exc.add_note(context(items[index]))
                raise

        isolation.phase(LOADING)
        runs = isolation.run_each_isolated(
            work,
            items,
            limits=limits,
            encode=encode,
            is_environment=is_environment_fault,
            is_expected=lambda exc: isinstance(exc, DATA_FAULTS),
            start_phase=LOADING,
            per_child=per_child,
            warm_up=warm_up,
        )
        with contextlib.closing(runs):
            for index in range(len(items)):
                item = items[index]
                try:
                    done, outcome = next(runs)
                    assert done == index, (done, index)
                    if isinstance(outcome, isolation.ChildFailure):
                        if outcome.environment:
                            exc = EnvironmentFault(outcome.describe())
                            exc.add_note(context(item))
                            raise exc from None
                        text = outcome.describe()
                        error = _fault_text(text, item)
                        record(
                            item,
                            Fault(item.recording, item.source, error, outcome, text, outcome.phase),
                        )
                        continue
                    result = decode(outcome)
                except EnvironmentFault:
                    raise
                except BaseException as exc:
                    if not getattr(exc, "__notes__", None):  # (limits' errors name their item)
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


def fault_is(fault: Fault, exc_type: type[BaseException]) -> bool:
    """True when ``fault`` was raised as an ``exc_type`` (in this process, or in a child,
    where only the type's name comes back)."""
    exc = fault.exception
    if isinstance(exc, isolation.ChildFailure):
        return exc.kind == "exception" and exc.type_name == exc_type.__name__
    return isinstance(exc, exc_type)


def _fault_text(description: str, item: Item) -> str:
    """The one-line error of a faulty item: its description, naming the source."""
    return description if item.source in description else f"{item.source}: {description}"
