"""Read every output back with the matching loader and compare it with its source as read
(a pickle, NWB, HDF5 file or KiloSort/Phy folder, each with its own reader).

Checked per recording: the number of units, the number of spikes of every unit, every spike
time within the target's tolerance (exact for ms, ~1 ulp for s, half a sample for samples, one
bin width for a raster; the format's registry entry says which), ``start_time`` and ``length``
(exact: every format stores them). The result of a batch is one JSON file::

    {"target": "nwb", "format": "nwb", "batch": "small", "ok": true,
     "results": [{"recording": "small", "status": "ok", "ok": true, "n_units": 8, ...}, ...]}

``status`` is ``ok``, ``mismatch`` (read back but different), ``unreadable`` (the loader
refused the file) or ``export_failed`` (a failure record from the export step). The workflow's
export job verifies each output right after writing it (:func:`verify_written`, called by
:func:`spikelab.workflow.export.run_export_job`) and writes the batch's JSON
(:func:`write_verify_json`); :func:`verify_batch` does the same for outputs already written. Bad
recordings are reported in the JSON and make the final ``check`` fail, so one bad file never
hides the results of the others in its batch.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spikelab import isolation
from spikelab.formats.atomic import atomic_file, written_file
from spikelab.jobs import (
    COMPARING,
    COPIED_NOTE,
    DATA_FAULTS,
    LOADING,
    READING_OUTPUT,
    Fault,
    Limits,
    RecordingLimits,
    SourceOf,
    describe_error,
    for_each_recording,
    output_size,
    read_failure_stub,
)
from spikelab.spikedata.spikedata import SpikeData
from spikelab.workflow.inputs import resolve_fs_Hz
from spikelab.workflow.targets import Target

__all__ = [
    "Comparison",
    "compare_spikedata",
    "VerifyItem",
    "verify_recording",
    "verify_batch",
    "verify_written",
    "stub_result",
    "fault_result",
    "write_verify_json",
]

log = logging.getLogger("spikelab.workflow")


@dataclass
class Comparison:
    """Outcome of comparing a re-read SpikeData with its source.

    ``max_abs_error_ms`` is the largest spike-time difference (ms), ``max_error_ulps`` the
    largest difference in units of the spacing of the compared times, ``tolerance_ms`` the
    tolerance applied (ms): the largest error any spike was allowed, ``abs_tol_ms`` plus
    ``tolerance_ulps`` ulps of the largest time compared (``abs_tol_ms`` when no spike was
    compared), so ``max_abs_error_ms <= tolerance_ms`` whenever the times pass.
    ``problems`` holds one line per failed check (empty when ``ok``).
    """

    ok: bool
    n_units: int
    n_spikes: int
    max_abs_error_ms: float = 0.0
    max_error_ulps: float = 0.0
    tolerance_ms: float = 0.0
    tolerance_ulps: int = 0
    abs_tol_ms: float = 0.0
    problems: list[str] = field(default_factory=list)


def compare_spikedata(
    source: SpikeData,
    read: SpikeData,
    *,
    abs_tol_ms: float = 0.0,
    ulps: int = 0,
    max_problems: int = 5,
) -> Comparison:
    """Compare ``read`` with ``source`` (both times in ms).

    A spike time passes when ``|read - source| <= abs_tol_ms + ulps * spacing(scale)``, with
    ``scale = max(|source time|, |start_time|)`` (times may be stored relative to the start).
    Unit count, per-unit spike counts, ``start_time`` and ``length`` must match exactly.
    """
    problems: list[str] = []
    if read.N != source.N:
        problems.append(f"unit count: {read.N} read back, {source.N} in the source")
    if read.start_time != source.start_time:
        problems.append(f"start_time: {read.start_time!r} ms read back, {source.start_time!r} ms")
    if read.length != source.length:
        problems.append(f"length: {read.length!r} ms read back, {source.length!r} ms")
    max_err = 0.0
    max_ulps = 0.0
    max_allowed = abs_tol_ms
    anchor = abs(source.start_time)
    for i in range(min(read.N, source.N)):
        a, b = source.train[i], read.train[i]
        if a.size != b.size:
            problems.append(f"unit {i}: {b.size} spikes read back, {a.size} in the source")
            continue
        if not a.size:
            continue
        err = np.abs(b - a)
        spacing = np.spacing(np.maximum(np.abs(a), anchor))
        allowed = abs_tol_ms + ulps * spacing
        max_err = max(max_err, float(err.max()))
        max_allowed = max(max_allowed, float(allowed.max()) if ulps else abs_tol_ms)
        max_ulps = max(max_ulps, float((err / spacing).max()))
        bad = np.flatnonzero(~(err <= allowed))
        if bad.size:
            j = int(bad[0])
            problems.append(
                f"unit {i}: {bad.size} spike times off by more than the tolerance, first at "
                f"index {j}: {float(b[j])!r} ms read back, {float(a[j])!r} ms in the source"
            )
    if len(problems) > max_problems:
        problems = problems[:max_problems] + [f"... and {len(problems) - max_problems} more"]
    return Comparison(
        ok=not problems,
        n_units=source.N,
        n_spikes=source.n_spikes,
        max_abs_error_ms=max_err,
        max_error_ulps=max_ulps,
        tolerance_ms=max_allowed,
        tolerance_ulps=ulps,
        abs_tol_ms=abs_tol_ms,
        problems=problems,
    )


def _number(x: float) -> float | None:
    return x if math.isfinite(x) else None


@dataclass(frozen=True)
class VerifyItem(SourceOf):
    """One recording of a verify batch: its name, source, output (file or folder), the
    sample sheet's sampling rate (Hz), if any, and the source's format and reader options."""

    recording: str
    source: str
    output: str
    sheet_fs_Hz: float | None = None
    source_format: str | None = None
    read_options: tuple[tuple[str, Any], ...] = ()


def _empty_result(target: Target, item: VerifyItem) -> dict[str, Any]:
    return {
        "recording": item.recording,
        "target": target.name,
        "source": item.source,
        "output": item.output,
        "status": "ok",
        "ok": True,
        "n_units": None,
        "n_spikes": None,
        "output_bytes": None,
        "time_unit": target.time_unit,
        "fs_Hz": None,
        "fs_Hz_from": None,
        "max_abs_error_ms": None,
        "max_error_ulps": None,
        "tolerance_ms": None,
        "tolerance_ulps": None,
        "message": "",
    }


def stub_result(target: Target, item: VerifyItem) -> dict[str, Any] | None:
    """The ``export_failed`` result when ``item``'s output is a failure record, else None."""
    stub = read_failure_stub(item.output)
    if stub is None:
        return None
    result = _empty_result(target, item)
    result.update(status="export_failed", ok=False, message=stub)
    return result


def verify_written(
    target: Target,
    item: VerifyItem,
    src: SpikeData,
    *,
    default_fs_Hz: float | None,
    pickle_loading: Mapping[str, Any] | None,
    t0: float | None = None,
    copied: bool | None = None,
    fresh: bool = False,
) -> dict[str, Any]:
    """Read ``item``'s output back with its format's reader and compare it with ``src``, the
    source as read (times in ms); the JSON-ready result (status ok, unreadable or mismatch).
    A fault of the reader (a data fault) is an ``unreadable`` result. ``copied`` says whether
    the output is a copy of its input (None: find out).

    ``fresh``: the caller says that this process has just written the output with the
    format's writer (never a copy of the input: ``copied`` must be False). The reader then
    gets the identity the writer recorded (:func:`~spikelab.formats.atomic.written_file`) and
    skips the checks that only untrusted files need if, and only if, the file it opens is that
    very file, unchanged (an NWB file: its whole-file check). Default: every check."""
    t0 = time.perf_counter() if t0 is None else t0
    result = _empty_result(target, item)
    result["output_bytes"] = output_size(item.output)
    fs, fs_from = resolve_fs_Hz(item.sheet_fs_Hz, src.metadata, default_fs_Hz)
    # every target: the summary completes the rate of targets that get no sheet or config
    # rate (their jobs do not depend on it), from the metadata's recorded here
    result.update(fs_Hz=fs, fs_Hz_from=fs_from)
    isolation.phase(READING_OUTPUT)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            kwargs = target.loader_kwargs(fs, pickle_loading=pickle_loading)
            written = written_file(item.output) if fresh and copied is False else None
            if written is not None:
                kwargs.update(target.spec.own_output_kwargs(written))
            read = target.spec.reader()(item.output, **kwargs)
        for w in caught:
            log.warning("%s: %s: %s", item.recording, w.category.__name__, w.message)
    except DATA_FAULTS as exc:
        result.update(status="unreadable", ok=False, message=describe_error(exc))
        result["seconds"] = round(time.perf_counter() - t0, 6)
        return result
    isolation.phase(COMPARING)
    abs_tol, ulps = target.time_tolerance(fs)
    cmp = compare_spikedata(src, read, abs_tol_ms=abs_tol, ulps=ulps)
    result.update(
        n_units=cmp.n_units,
        n_spikes=cmp.n_spikes,
        max_abs_error_ms=cmp.max_abs_error_ms,
        max_error_ulps=_number(cmp.max_error_ulps) if abs_tol == 0 else None,
        tolerance_ms=_number(cmp.tolerance_ms),
        tolerance_ulps=ulps,
    )
    if not cmp.ok:
        result.update(status="mismatch", ok=False, message="; ".join(cmp.problems))
    elif item.same_as(target) if copied is None else copied:
        result["message"] = COPIED_NOTE
    result["seconds"] = round(time.perf_counter() - t0, 6)
    return result


def fault_result(target: Target, item: VerifyItem, fault: Fault) -> dict[str, Any]:
    """The ``unreadable`` result of an item whose verification failed with ``fault`` (its
    source unreadable, or its reading crashed or exceeded the limits in a child)."""
    result = _empty_result(target, item)
    with contextlib.suppress(OSError):
        result["output_bytes"] = output_size(item.output)
    where = "source: " if fault.phase == LOADING else ""
    result.update(status="unreadable", ok=False, message=where + fault.description)
    return result


def _verify_items(
    target: Target,
    items: Sequence[VerifyItem],
    *,
    default_fs_Hz: float | None,
    pickle_loading: Mapping[str, Any] | None,
    limits: RecordingLimits | None = None,
) -> list[dict[str, Any]]:
    """One result per item (see :func:`verify_recording`). A source that cannot be read gives
    an ``unreadable`` result; so does an output whose reading fails or, with ``limits``
    (each item verified in a child process), crashes or exceeds them."""

    def verify(item: VerifyItem) -> dict[str, Any]:
        t0 = time.perf_counter()
        stub = stub_result(target, item)
        if stub is not None:
            return stub
        src = item.load(pickle_loading, default_fs_Hz)  # a fault here: see failed
        return verify_written(
            target, item, src, default_fs_Hz=default_fs_Hz, pickle_loading=pickle_loading, t0=t0
        )

    def failed(item: VerifyItem, fault: Fault, keep_going: bool) -> dict[str, Any]:
        return fault_result(target, item, fault)

    def context(item: VerifyItem) -> str:
        return f"while verifying {item.output} against {item.source} [{target.name}]"

    def isolate(item: VerifyItem) -> Limits:
        return limits.for_source(item.source, target.spec.resources)

    return for_each_recording(
        items,
        verify,
        on_fault=failed,
        context=context,
        failed=f"{target.name}: {{bad}} of {{total}} sources could not be read",
        isolate=None if limits is None else isolate,
        per_child=None if limits is None else limits.per_child_for(pickle_loading),
        warm_up=lambda: target.spec.warm_up(target.options),  # for workers after the first
    )


def verify_recording(
    target: Target,
    recording: str,
    source: str,
    output: str,
    *,
    sheet_fs_Hz: float | None = None,
    default_fs_Hz: float | None = None,
    pickle_loading: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Verify one output against its source; return the JSON-ready result dict.

    ``pickle_loading`` holds the opt-ins of ``load_spikedata_from_pickle`` (``trusted``,
    ``allow_globals``) used for the source and a pickle output; default: restricted loading.
    """
    item = VerifyItem(recording, source, output, sheet_fs_Hz)
    return _verify_items(
        target, [item], default_fs_Hz=default_fs_Hz, pickle_loading=pickle_loading
    )[0]


def verify_batch(
    target: Target,
    items: Sequence[VerifyItem],
    out_json: str,
    *,
    batch: str,
    default_fs_Hz: float | None = None,
    pickle_loading: Mapping[str, Any] | None = None,
    limits: RecordingLimits | None = None,
) -> dict[str, Any]:
    """Verify every item and write ``out_json``; with ``limits``, each item in a child
    process under them."""
    results = _verify_items(
        target, items, default_fs_Hz=default_fs_Hz, pickle_loading=pickle_loading, limits=limits
    )
    return write_verify_json(target, results, out_json, batch=batch)


def write_verify_json(
    target: Target, results: Sequence[Mapping[str, Any]], out_json: str, *, batch: str
) -> dict[str, Any]:
    """Log one line per result and write the batch's verify JSON ``out_json`` (atomically)."""
    for r in results:
        if r["ok"]:
            log.info(
                "verified %s against %s: %d units, %d spikes, max error %.3g ms",
                r["output"],
                r["source"],
                r["n_units"],
                r["n_spikes"],
                r["max_abs_error_ms"],
            )
        else:
            log.error("%s: %s %s: %s", target.name, r["status"], r["output"], r["message"])
    doc = {
        "target": target.name,
        "format": target.format,
        "batch": batch,
        "ok": all(r["ok"] for r in results),
        "results": list(results),
    }
    with atomic_file(out_json) as tmp:
        Path(tmp).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    log.info("wrote %s (%d bytes)", out_json, Path(out_json).stat().st_size)
    return doc
