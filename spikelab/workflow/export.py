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
from spikelab.jobs import (
    EXPORTING,
    BatchError,
    Fault,
    Limits,
    RecordingLimits,
    for_each_recording,
    load_source,
    output_size,
    setup_logging,
    write_failure_stub,
)
from spikelab.workflow.inputs import Recording, resolve_fs_Hz
from spikelab.workflow.targets import Target

__all__ = [
    "BatchExportError",
    "RecordingParams",
    "ExportItem",
    "ExportResult",
    "export_batch",
    "run_export_job",
]

log = logging.getLogger("spikelab.workflow")


class BatchExportError(BatchError):
    """Some recordings of a batch could not be converted (``on_bad_recording="fail"``)."""


@dataclass(frozen=True)
class RecordingParams:
    """What a job is told of one recording besides its source and output (Snakemake passes
    it as a mapping with these keys, see :meth:`from_mapping`).

    ``sheet_fs_Hz`` is the sample sheet's sampling rate (Hz), ``sheet_options`` the sheet's
    writer keywords for this target (e.g. NWB subject fields).
    """

    recording: str
    sheet_fs_Hz: float | None = None
    sheet_options: Mapping[str, Any] | None = None

    @classmethod
    def for_target(cls, target: Target, recording: Recording) -> RecordingParams:
        """What ``target``'s jobs take of ``recording``: the sheet's fs_Hz only when the
        target uses a rate, the sheet's options only those its format takes (so a sheet's
        NWB subject columns re-run the NWB exports and nothing else)."""
        fs = recording.fs_Hz if target.uses_fs else None
        columns = target.sheet_columns
        options = {k: v for k, v in recording.sheet_options if k in columns}
        return cls(recording.name, fs, options)

    def as_params(self) -> dict[str, Any]:
        """A plain mapping for Snakemake ``params:`` (read back by :meth:`from_mapping`)."""
        return {
            "recording": self.recording,
            "sheet_fs_Hz": self.sheet_fs_Hz,
            "sheet_options": dict(sorted((self.sheet_options or {}).items())),
        }

    @classmethod
    def from_mapping(cls, params: Mapping[str, Any]) -> RecordingParams:
        unknown = set(params) - {"recording", "sheet_fs_Hz", "sheet_options"}
        if unknown or "recording" not in params:
            raise ValueError(
                "per-recording params need 'recording' and may hold 'sheet_fs_Hz' and "
                f"'sheet_options'; got {sorted(params)}"
            )
        return cls(
            str(params["recording"]),
            params.get("sheet_fs_Hz"),
            dict(params.get("sheet_options") or {}),
        )


@dataclass(frozen=True)
class ExportItem:
    """One recording of a batch: its name, source pickle, output path and sheet fs (Hz)."""

    recording: str
    source: str
    output: str
    sheet_fs_Hz: float | None = None
    sheet_options: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ExportResult:
    """What happened to one recording: ``ok`` with bytes and seconds, or the error text."""

    recording: str
    output: str
    ok: bool
    bytes: int = 0
    seconds: float = 0.0
    error: str = ""


def export_batch(
    exporter: Callable[..., Any],
    target: Target,
    items: Sequence[ExportItem],
    *,
    default_fs_Hz: float | None,
    on_bad_recording: str = "continue",
    pickle_loading: Mapping[str, Any] | None = None,
    limits: RecordingLimits | None = None,
) -> list[ExportResult]:
    """Convert every item with ``exporter(sd, output, **kwargs)``; see the module docstring.

    ``default_fs_Hz`` (Hz) is the config's fallback sampling rate. ``pickle_loading`` holds
    the opt-ins of ``load_spikedata_from_pickle`` (``trusted``, ``allow_globals``) for sources
    the user trusts; default: the restricted loader. With ``limits``, each recording is
    converted in its own child process under them (:func:`spikelab.jobs.for_each_recording`);
    without, in this process. Returns one result per item.
    """
    if (pickle_loading or {}).get("trusted"):
        log.warning(
            "trusted_pickles is on: the sources are loaded with plain pickle.load, which runs "
            "any code a pickle holds"
        )
    t_batch = time.perf_counter()
    if limits is not None and items:
        target.spec.warm_up(target.options)  # children start with the writer's imports done

    def isolate(item: ExportItem) -> Limits:
        return limits.for_source(item.source, target.spec.resources)

    def convert(item: ExportItem) -> ExportResult:
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sd = load_source(item.source, pickle_loading)
            fs, fs_source = resolve_fs_Hz(item.sheet_fs_Hz, sd.metadata, default_fs_Hz)
            kwargs = target.exporter_kwargs(item.recording, fs)
            kwargs.update(item.sheet_options)
            isolation.phase(EXPORTING)
            exporter(sd, item.output, **kwargs)
        for w in caught:
            log.warning("%s: %s: %s", item.recording, w.category.__name__, w.message)
        seconds = time.perf_counter() - t0
        size = output_size(item.output)
        log.info(
            "wrote %s (%d bytes, %.3f s) from %s%s",
            item.output,
            size,
            seconds,
            item.source,
            f" at fs_Hz={fs:g} ({fs_source})" if target.uses_fs and fs is not None else "",
        )
        return ExportResult(item.recording, item.output, True, size, seconds)

    def failed(item: ExportItem, fault: Fault, keep_going: bool) -> ExportResult:
        log.error("%s: cannot convert %s: %s", target.name, item.recording, fault.error)
        remove_stale_temporaries(Path(item.output))  # of a child that died writing
        if keep_going:
            write_failure_stub(
                item.output,
                is_dir=target.is_dir,
                recording=item.recording,
                source=item.source,
                target=target.name,
                error=fault.error,
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
) -> list[ExportResult]:
    """Entry point of ``scripts/export.py``: set up logging and export one batch.

    ``exporter`` defaults to the writer of the target's format. ``recordings`` holds one
    mapping per source, in order (see :class:`RecordingParams`); ``pickle_loading`` as for
    :func:`export_batch`. Each recording is converted in a child process under the limits of
    ``isolation`` (``enabled``, default True; ``memory_mb``, ``seconds``: None derives them
    from the job's ``mem_mb`` (MB) and the format's resource model).
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
        items.append(ExportItem(rec.recording, str(src), str(out), rec.sheet_fs_Hz, options))
    return export_batch(
        exporter,
        tgt,
        items,
        default_fs_Hz=default_fs_Hz,
        on_bad_recording=on_bad_recording,
        pickle_loading=pickle_loading,
        limits=RecordingLimits.from_params(isolation, mem_mb),
    )
