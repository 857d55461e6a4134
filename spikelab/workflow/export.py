"""Export one batch of recordings to one target, logging one line per file written.

A recording whose own data is at fault does not stop its batch (see :mod:`spikelab.jobs`):

- ``on_bad_recording="continue"`` (default): the other recordings are converted, and a small
  *failure record* is written in place of the bad recording's output: a text file (a folder
  holding ``EXPORT_FAILED.txt`` for a folder format) whose first line is
  :data:`~spikelab.jobs.STUB_MARKER`, followed by the source and the error (every loader
  refuses it, see :mod:`spikelab.formats.failure_record`). The job succeeds,
  so Snakemake keeps (and later verifies) the good files; the verify step reports the stub and
  the final ``check`` fails the run naming every bad file. Fixing the source (a newer file)
  re-runs its batch.
- ``on_bad_recording="fail"``: the other recordings are converted, then the job fails with
  :class:`BatchExportError` naming every bad file; Snakemake then removes all outputs of the
  job (keep them with ``--keep-incomplete``). With ``batch_size: 1`` this is Snakemake's plain
  per-file behaviour.

Any other error (a bug, a full disk, a missing library) fails the job at once, with a note
naming the recording being converted.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spikelab import isolation
from spikelab.formats.atomic import remove_stale_temporaries
from spikelab.formats.errors import MissingSamplingRateError
from spikelab.formats.registry import DEFAULT_INPUT_FORMAT, get_format
from spikelab.jobs import (
    COMPARING,
    COPIED_NOTE,
    EXPORTING,
    READING_OUTPUT,
    SOURCE_FIX,
    BatchError,
    Fault,
    Limits,
    RecordingLimits,
    SourceOf,
    copy_unchanged,
    fault_is,
    for_each_recording,
    output_size,
    setup_logging,
    write_failure_stub,
)
from spikelab.workflow.inputs import Recording, resolve_fs_Hz
from spikelab.workflow.targets import Target, sampling_rate_fix

__all__ = [
    "BatchExportError",
    "RecordingParams",
    "ExportItem",
    "ExportResult",
    "export_batch",
    "run_export_job",
]

log = logging.getLogger("spikelab.workflow")

#: Phases of a recording's work that come after its output is written (verification).
VERIFY_PHASES = (READING_OUTPUT, COMPARING)


class BatchExportError(BatchError):
    """Some recordings of a batch could not be converted (``on_bad_recording="fail"``)."""


@dataclass(frozen=True)
class RecordingParams:
    """What a job is told of one recording besides its source and output (Snakemake passes
    it as a mapping with these keys, see :meth:`from_mapping`).

    ``sheet_fs_Hz`` is the sample sheet's sampling rate (Hz), ``sheet_options`` the sheet's
    writer keywords for this target (e.g. NWB subject fields), ``source_format`` the input's
    format (registry name; None: the default, a pickle) and ``read_options`` its reader
    keywords.
    """

    recording: str
    sheet_fs_Hz: float | None = None
    sheet_options: Mapping[str, Any] | None = None
    source_format: str | None = None
    read_options: Mapping[str, Any] | None = None

    @classmethod
    def for_target(cls, target: Target, recording: Recording) -> RecordingParams:
        """What ``target``'s jobs take of ``recording``: the sheet's fs_Hz only when the
        target uses a rate or reading the input may (times in samples), the sheet's options
        only those its format takes (so a sheet's NWB subject columns re-run the NWB exports
        and nothing else), the input's format and reader options when not a plain pickle."""
        source = get_format(recording.format)
        default = recording.format == DEFAULT_INPUT_FORMAT
        fs = recording.fs_Hz if target.uses_fs or source.input_uses_fs else None
        columns = target.sheet_columns
        options = {k: v for k, v in recording.sheet_options if k in columns}
        return cls(
            recording.name,
            fs,
            options,
            None if default else recording.format,
            dict(recording.read_options) or None,
        )

    @staticmethod
    def source_of(recording: Recording) -> dict[str, Any]:
        """How to read ``recording``'s input, for jobs that only read it (figures): the
        format and reader options when not a plain pickle, and the sheet's rate (Hz) when the
        reader may take one."""
        if recording.format == DEFAULT_INPUT_FORMAT:
            return {}
        return {
            "source_format": recording.format,
            "read_options": recording.read_options,
            "sheet_fs_Hz": recording.fs_Hz if recording.reads_fs else None,
        }

    def as_params(self) -> dict[str, Any] | str:
        """A plain value for Snakemake ``params:`` (read back by :meth:`from_mapping`): the
        name alone when nothing else is set (Snakemake stores a job's params with each of its
        outputs, so 100 short names instead of 100 mappings keep its records small), else a
        mapping, the source keys only when set (pickle inputs keep the params they had)."""
        if not (self.sheet_fs_Hz is not None or self.sheet_options or self.source_format):
            if not self.read_options:
                return self.recording
        params = {
            "recording": self.recording,
            "sheet_fs_Hz": self.sheet_fs_Hz,
            "sheet_options": dict(sorted((self.sheet_options or {}).items())),
        }
        if self.source_format is not None:
            params["source_format"] = self.source_format
        if self.read_options:
            params["read_options"] = dict(sorted(self.read_options.items()))
        return params

    @classmethod
    def from_mapping(cls, params: Mapping[str, Any] | str) -> RecordingParams:
        if isinstance(params, str):  # a name alone (see as_params)
            return cls(params)
        known = {"recording", "sheet_fs_Hz", "sheet_options", "source_format", "read_options"}
        unknown = set(params) - known
        if unknown or "recording" not in params:
            raise ValueError(
                "per-recording params need 'recording' and may hold "
                f"{sorted(known - {'recording'})}; got {sorted(params)}"
            )
        return cls(
            str(params["recording"]),
            params.get("sheet_fs_Hz"),
            dict(params.get("sheet_options") or {}),
            params.get("source_format"),
            dict(params.get("read_options") or {}),
        )

    def source_kwargs(self) -> dict[str, Any]:
        """Keywords of :func:`~spikelab.jobs.load_source` for this recording's input."""
        return {
            "source_format": self.source_format,
            "read_options": tuple(sorted((self.read_options or {}).items())),
        }


@dataclass(frozen=True)
class ExportItem(SourceOf):
    """One recording of a batch: its name, source, output path and sheet fs (Hz), the sheet's
    writer options and the source's format and reader options."""

    recording: str
    source: str
    output: str
    sheet_fs_Hz: float | None = None
    sheet_options: tuple[tuple[str, str], ...] = ()
    source_format: str | None = None
    read_options: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class ExportResult:
    """What happened to one recording: ``ok`` with bytes and seconds, or the error text."""

    recording: str
    output: str
    ok: bool
    bytes: int = 0
    seconds: float = 0.0
    error: str = ""
    #: The output's verification (a verify result dict, see :mod:`.verify`), when asked for.
    verify: dict[str, Any] | None = None


def export_batch(
    exporter: Callable[..., Any],
    target: Target,
    items: Sequence[ExportItem],
    *,
    default_fs_Hz: float | None,
    on_bad_recording: str = "continue",
    pickle_loading: Mapping[str, Any] | None = None,
    limits: RecordingLimits | None = None,
    sample_sheet: bool = False,
    verify: Callable[[ExportItem, Any, bool], dict[str, Any]] | None = None,
    on_verify_fault: Callable[[ExportItem, Fault], dict[str, Any]] | None = None,
) -> list[ExportResult]:
    """Convert every item with ``exporter(sd, output, **kwargs)``; see the module docstring.

    With ``verify``, each output is then verified at once, in the same process (or child),
    with the source already read: ``verify(item, sd, copied)`` gives its result
    (``ExportResult.verify``; ``copied``: the output is a copy of its input); a fault while
    verifying (a crash or limit in the child) gives ``on_verify_fault(item, fault)`` and
    keeps the output.

    ``default_fs_Hz`` (Hz) is the config's fallback sampling rate; ``sample_sheet`` says
    whether the recordings come from a sample sheet (which may give rates), for the messages
    about a missing rate. ``pickle_loading`` holds
    the opt-ins of ``load_spikedata_from_pickle`` (``trusted``, ``allow_globals``) for sources
    the user trusts; default: the restricted loader. With ``limits``, the recordings are
    converted in a worker child process, each under them (:func:`spikelab.jobs.for_each_recording`);
    without, in this process. Returns one result per item.
    """
    if (pickle_loading or {}).get("trusted"):
        log.warning(
            "trusted_pickles is on: the sources are loaded with plain pickle.load, which runs "
            "any code a pickle holds"
        )
    t_batch = time.perf_counter()

    def isolate(item: ExportItem) -> Limits:
        return limits.for_source(item.source, target.spec.resources)

    def convert(item: ExportItem) -> ExportResult:
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sd = item.load(pickle_loading, default_fs_Hz)
            fs, fs_source = resolve_fs_Hz(item.sheet_fs_Hz, sd.metadata, default_fs_Hz)
            kwargs = target.exporter_kwargs(item.recording, fs, sample_sheet=sample_sheet)
            kwargs.update(item.sheet_options)
            isolation.phase(EXPORTING)
            copied = item.same_as(target) and not item.sheet_options
            if copied:
                copy_unchanged(item.source, item.output)
            else:
                exporter(sd, item.output, **kwargs)
        for w in caught:
            log.warning("%s: %s: %s", item.recording, w.category.__name__, w.message)
        seconds = time.perf_counter() - t0
        size = output_size(item.output)
        log.info(
            "wrote %s (%d bytes, %.3f s) from %s%s%s",
            item.output,
            size,
            seconds,
            item.source,
            f" at fs_Hz={fs:g} ({fs_source})" if target.uses_fs and fs is not None else "",
            f": {COPIED_NOTE}" if copied else "",
        )
        checked = None if verify is None else verify(item, sd, copied)
        return ExportResult(item.recording, item.output, True, size, seconds, verify=checked)

    def failed(item: ExportItem, fault: Fault, keep_going: bool) -> ExportResult:
        if fault.phase in VERIFY_PHASES and on_verify_fault is not None:
            log.error("%s: cannot verify %s: %s", target.name, item.output, fault.error)
            size = output_size(item.output)
            return ExportResult(
                item.recording, item.output, True, size, verify=on_verify_fault(item, fault)
            )
        log.error("%s: cannot convert %s: %s", target.name, item.recording, fault.error)
        remove_stale_temporaries(Path(item.output))  # of a child that died writing
        if keep_going:
            missing_rate = fault_is(fault, MissingSamplingRateError)
            write_failure_stub(
                item.output,
                is_dir=target.is_dir,
                recording=item.recording,
                source=item.source,
                target=target.name,
                error=fault.error,
                fix=sampling_rate_fix(sample_sheet) if missing_rate else SOURCE_FIX,
            )
            log.info("wrote failure record %s", item.output)
        return ExportResult(item.recording, item.output, False, error=fault.error)

    def context(item: ExportItem) -> str:
        return (
            f"while converting recording {item.recording!r} ({item.source}) to "
            f"{item.output} [{target.name}]"
        )

    def summary(results: list[ExportResult]) -> None:
        bad = sum(not r.ok for r in results)
        log.info(
            "%s: %d of %d recordings converted in %.3f s",
            target.name,
            len(results) - bad,
            len(results),
            time.perf_counter() - t_batch,
        )

    return for_each_recording(
        items,
        convert,
        on_fault=failed,
        on_bad_recording=on_bad_recording,
        context=context,
        failed=f"{target.name}: {{bad}} of {{total}} recordings could not be converted",
        error_type=BatchExportError,
        finish=summary,
        isolate=None if limits is None else isolate,
        encode=dataclasses.asdict,
        decode=lambda fields: ExportResult(**fields),
        per_child=None if limits is None else limits.per_child_for(pickle_loading),
        warm_up=lambda: target.spec.warm_up(target.options),  # for workers after the first
    )


def run_export_job(
    exporter: Callable[..., Any] | None = None,
    *,
    target: Mapping[str, Any],
    sources: Sequence[str],
    outputs: Sequence[str],
    recordings: Sequence[Mapping[str, Any]],
    default_fs_Hz: float | None,
    on_bad_recording: str,
    log_path: str | None,
    pickle_loading: Mapping[str, Any] | None = None,
    isolation: Mapping[str, Any] | None = None,
    mem_mb: float | None = None,
    sample_sheet: bool | None = None,
    verify_json: str | None = None,
    batch: str | None = None,
) -> list[ExportResult]:
    """Entry point of ``scripts/export.py``: set up logging and export one batch; with
    ``verify_json``, verify each output right after writing it (read back with its format's
    reader, compared with the source as read) and write the batch's verify JSON there
    (``batch`` is its key).

    ``exporter`` defaults to the writer of the target's format. ``recordings`` holds one
    mapping per source, in order (see :class:`RecordingParams`); ``pickle_loading`` as for
    :func:`export_batch`. Each recording is converted in a child process under the limits of
    ``isolation`` (``enabled``, default True; ``memory_mb``, ``seconds``: None derives them
    from the job's ``mem_mb`` (MB) and the format's resource model). ``sample_sheet``: whether
    the recordings come from a sample sheet (None when the target needs no sampling rate).
    """
    setup_logging(log_path)
    tgt = Target.from_params(target)
    exporter = exporter or tgt.spec.writer()
    if not (len(sources) == len(outputs) == len(recordings)):
        raise ValueError(
            f"{len(sources)} sources, {len(outputs)} outputs and {len(recordings)} recordings"
        )
    items = []
    for params, src, out in zip(recordings, sources, outputs, strict=True):
        rec = RecordingParams.from_mapping(params)
        options = tuple(sorted((rec.sheet_options or {}).items()))
        items.append(
            ExportItem(
                rec.recording, str(src), str(out), rec.sheet_fs_Hz, options, **rec.source_kwargs()
            )
        )
    hooks: dict[str, Any] = {}
    if verify_json is not None:
        from spikelab.workflow import verify as verifying

        def as_verify_item(item: ExportItem) -> verifying.VerifyItem:
            return verifying.VerifyItem(
                item.recording,
                item.source,
                item.output,
                item.sheet_fs_Hz,
                item.source_format,
                item.read_options,
            )

        def check(item: ExportItem, sd: Any, copied: bool) -> dict[str, Any]:
            return verifying.verify_written(
                tgt,
                as_verify_item(item),
                sd,
                default_fs_Hz=default_fs_Hz,
                pickle_loading=pickle_loading,
                copied=copied,
                fresh=not copied,  # written just now by this process (see export_batch)
            )

        def check_failed(item: ExportItem, fault: Fault) -> dict[str, Any]:
            return verifying.fault_result(tgt, as_verify_item(item), fault)

        hooks = {"verify": check, "on_verify_fault": check_failed}
    results = export_batch(
        exporter,
        tgt,
        items,
        default_fs_Hz=default_fs_Hz,
        on_bad_recording=on_bad_recording,
        pickle_loading=pickle_loading,
        limits=RecordingLimits.from_params(isolation, mem_mb),
        sample_sheet=bool(sample_sheet),
        **hooks,
    )
    if verify_json is not None:
        checked = [
            r.verify
            if r.verify is not None
            else verifying.stub_result(tgt, as_verify_item(item))
            or verifying.fault_result(tgt, as_verify_item(item), _lost(item, r))
            for item, r in zip(items, results, strict=True)
        ]
        verifying.write_verify_json(tgt, checked, verify_json, batch=str(batch))
    return results


def _lost(item: ExportItem, result: ExportResult) -> Fault:
    """The fault of an export that left neither an output nor a failure record."""
    return Fault(
        item.recording,
        item.source,
        result.error or "no output was written",
        RuntimeError(result.error),
        description=result.error or "no output was written",
    )
