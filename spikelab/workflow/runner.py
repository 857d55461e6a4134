"""Export one batch of recordings to one target, logging one line per file written.

A recording whose own data is at fault (an unreadable, unsafe or invalid pickle, or an export
the recording cannot satisfy, such as KiloSort without a sampling rate) does not stop its batch:

- ``on_bad_recording="continue"`` (default): the other recordings are converted, and a small
  *failure stub* is written in place of the bad recording's output: a text file (a folder
  holding ``EXPORT_FAILED.txt`` for KiloSort) whose first line is :data:`STUB_MARKER`, followed
  by the source and the error. The job succeeds, so Snakemake keeps (and later verifies) the
  good files; the verify step reports the stub and the final ``check`` fails the run naming
  every bad file. Fixing the source (a newer file) re-runs its batch.
- ``on_bad_recording="fail"``: the other recordings are converted, then the job fails with
  :class:`BatchExportError` naming every bad file; Snakemake then removes all outputs of the
  job (keep them with ``--keep-incomplete``). With ``batch_size: 1`` this is Snakemake's plain
  per-file behaviour.

Any other error (a bug, a full disk, a missing library) fails the job at once, with a note
naming the recording being converted.
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spikelab.data_loaders._common import (
    ExportError,
    LoadError,
    OutputInTheWayError,
    atomic_directory,
    atomic_file,
)
from spikelab.data_loaders.pickle_io import load_spikedata_from_pickle
from spikelab.spikedata.spikedata import InvalidSpikeDataError
from spikelab.workflow.inputs import resolve_fs_Hz
from spikelab.workflow.targets import MissingSamplingRateError, Target

__all__ = [
    "STUB_MARKER",
    "STUB_FILE",
    "DATA_FAULTS",
    "BatchExportError",
    "ExportItem",
    "ExportResult",
    "setup_logging",
    "describe_error",
    "output_size",
    "write_failure_stub",
    "read_failure_stub",
    "export_batch",
    "EXPORTERS",
    "exporter_for",
    "run_export_job",
]

STUB_MARKER = "SPIKELAB EXPORT FAILED"
STUB_FILE = "EXPORT_FAILED.txt"  # inside a failed KiloSort folder
ON_BAD_RECORDING = ("continue", "fail")

#: Errors that mean "this recording cannot be converted", not "the job is broken".
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

log = logging.getLogger("spikelab.workflow")


class BatchExportError(RuntimeError):
    """Some recordings of a batch could not be converted (``on_bad_recording="fail"``)."""


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


def output_size(path: str | os.PathLike) -> int:
    """Size in bytes of a file, or of all files in a folder."""
    p = Path(path)
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return p.stat().st_size


def describe_error(exc: BaseException) -> str:
    text = str(exc).strip() or "(no message)"
    return f"{type(exc).__name__}: {' '.join(text.split())}"


def write_failure_stub(item: ExportItem, target: Target, error: str) -> None:
    """Write the failure stub in place of ``item.output`` (atomically)."""
    text = (
        f"{STUB_MARKER}\n"
        f"recording: {item.recording}\n"
        f"source: {item.source}\n"
        f"target: {target.name}\n"
        f"error: {error}\n"
        "This placeholder stands where the output would be. Fix or remove the source and "
        "run snakemake again.\n"
    )
    if target.is_dir:
        with atomic_directory(item.output) as tmp:
            (tmp / STUB_FILE).write_text(text, encoding="utf-8")
    else:
        with atomic_file(item.output) as tmp:
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


def _upload_to_s3(local: str, recording: str, options: dict[str, Any]) -> None:
    from spikelab.data_loaders import s3_utils

    url = f"{options['s3_prefix'].rstrip('/')}/{recording}.pkl"
    t0 = time.perf_counter()
    s3_utils.upload_to_s3(
        local,
        url,
        endpoint_url=options.get("s3_endpoint_url"),
        region_name=options.get("s3_region_name"),
    )
    log.info(
        "uploaded %s to %s (%d bytes, %.3f s)",
        local,
        url,
        os.path.getsize(local),
        time.perf_counter() - t0,
    )


def _add_context(exc: BaseException, item: ExportItem, target: Target) -> None:
    exc.add_note(
        f"while converting recording {item.recording!r} ({item.source}) to "
        f"{item.output} [{target.name}]"
    )


def export_batch(
    exporter: Callable[..., Any],
    target: Target,
    items: Sequence[ExportItem],
    *,
    default_fs_Hz: float | None,
    on_bad_recording: str = "continue",
    pickle_loading: Mapping[str, Any] | None = None,
) -> list[ExportResult]:
    """Convert every item with ``exporter(sd, output, **kwargs)``; see the module docstring.

    ``default_fs_Hz`` (Hz) is the config's fallback sampling rate. ``pickle_loading`` holds
    the opt-ins of ``load_spikedata_from_pickle`` (``trusted``, ``allow_globals``) for sources
    the user trusts; default: the restricted loader. Returns one result per item.
    """
    if on_bad_recording not in ON_BAD_RECORDING:
        raise ValueError(f"on_bad_recording must be one of {ON_BAD_RECORDING}")
    pickle_loading = dict(pickle_loading or {})
    if pickle_loading.get("trusted"):
        log.warning(
            "trusted_pickles is on: the sources are loaded with plain pickle.load, which runs "
            "any code a pickle holds"
        )
    results: list[ExportResult] = []
    t_batch = time.perf_counter()
    for item in items:
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                sd = load_spikedata_from_pickle(item.source, **pickle_loading)
                fs, fs_source = resolve_fs_Hz(item.sheet_fs_Hz, sd.metadata, default_fs_Hz)
                kwargs = target.exporter_kwargs(item.recording, fs)
                kwargs.update(item.sheet_options)
                exporter(sd, item.output, **kwargs)
        except DATA_FAULTS as exc:
            if isinstance(exc, NOT_DATA_FAULTS):
                _add_context(exc, item, target)
                raise
            error = describe_error(exc)
            if item.source not in error:
                error = f"{item.source}: {error}"
            log.error("%s: cannot convert %s: %s", target.name, item.recording, error)
            if on_bad_recording == "continue":
                write_failure_stub(item, target, error)
                log.error("wrote failure stub %s", item.output)
            results.append(ExportResult(item.recording, item.output, False, error=error))
            continue
        except BaseException as exc:
            _add_context(exc, item, target)
            raise
        for w in caught:
            log.warning("%s: %s: %s", item.recording, w.category.__name__, w.message)
        if target.format == "pickle" and target.options.get("s3_prefix"):
            _upload_to_s3(item.output, item.recording, target.options)
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
        results.append(ExportResult(item.recording, item.output, True, size, seconds))
    bad = [r for r in results if not r.ok]
    log.info(
        "%s: %d of %d recordings converted in %.3f s",
        target.name,
        len(results) - len(bad),
        len(results),
        time.perf_counter() - t_batch,
    )
    if bad and on_bad_recording == "fail":
        raise BatchExportError(
            f"{target.name}: {len(bad)} of {len(results)} recordings could not be converted "
            "(on_bad_recording: fail):\n  - "
            + "\n  - ".join(f"{r.recording}: {r.error}" for r in bad)
        )
    return results


#: The exporter in ``spikelab.data_loaders.data_exporters`` of each target format.
EXPORTERS = {
    "hdf5": "export_spikedata_to_hdf5",
    "nwb": "export_spikedata_to_nwb",
    "kilosort": "export_spikedata_to_kilosort",
    "pickle": "export_to_pickle",
}


def exporter_for(fmt: str) -> Callable[..., Any]:
    """The exporter function of format ``fmt`` (its heavy imports stay inside the function)."""
    from spikelab.data_loaders import data_exporters

    return getattr(data_exporters, EXPORTERS[fmt])


def run_export_job(
    exporter: Callable[..., Any] | None = None,
    *,
    target: dict[str, Any],
    sources: Sequence[str],
    outputs: Sequence[str],
    recordings: Sequence[tuple],
    default_fs_Hz: float | None,
    on_bad_recording: str,
    log_path: str | None,
    pickle_loading: Mapping[str, Any] | None = None,
) -> list[ExportResult]:
    """Entry point of ``scripts/export.py``: set up logging and export one batch.

    ``exporter`` defaults to the exporter of the target's format (:func:`exporter_for`).

    ``recordings`` holds ``(name, sample-sheet fs_Hz or None[, {sheet exporter options}])``
    per source, in order; ``pickle_loading`` as for :func:`export_batch`.
    """
    setup_logging(log_path)
    tgt = Target.from_params(target)
    exporter = exporter or exporter_for(tgt.format)
    if not (len(sources) == len(outputs) == len(recordings)):
        raise ValueError(
            f"{len(sources)} sources, {len(outputs)} outputs and {len(recordings)} recordings"
        )
    items = []
    for rec, src, out in zip(recordings, sources, outputs, strict=True):
        name, fs, *rest = rec
        options = tuple(sorted((rest[0] if rest else {}).items()))
        items.append(ExportItem(name, str(src), str(out), fs, options))
    return export_batch(
        exporter,
        tgt,
        items,
        default_fs_Hz=default_fs_Hz,
        on_bad_recording=on_bad_recording,
        pickle_loading=pickle_loading,
    )
