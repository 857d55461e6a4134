"""The summary table of every recording x target, and the final check that fails the run.

``results/summary.tsv`` has one row per recording and target, sorted by recording then
target, with the columns :data:`COLUMNS` (empty cells where a value does not apply):

- ``fs_Hz``: the recording's sampling rate (Hz) as the workflow resolves it (sample sheet,
  then ``metadata["fs_Hz"]``, then the config's ``fs_Hz``), the same on every row of the
  recording whatever the target; empty when none gives one;
- ``max_abs_error_ms``: the largest spike-time difference (ms) between output and source;
- ``tolerance_ms``: the largest difference (ms) the verification allowed any spike of the
  recording, the target's absolute tolerance plus its ulp allowance at the largest time;
- ``log``: the log holding the details (the export job's for ``export_failed``, the verify
  job's otherwise).

The check (:func:`run_check_job`) prints one line per bad recording and fault, and one line
naming the outputs in ``results/`` that belong to no current recording or target.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from spikelab.formats.atomic import atomic_file
from spikelab.jobs import setup_logging
from spikelab.workflow.inputs import resolve_fs_Hz
from spikelab.workflow.targets import RESULTS, export_log

__all__ = [
    "COLUMNS",
    "VerificationFailed",
    "collect_rows",
    "write_summary",
    "read_summary",
    "resolve_rows_fs",
    "failure_report",
    "check_summary",
    "run_summary_job",
    "run_check_job",
]

COLUMNS = (
    "recording",
    "target",
    "status",
    "n_units",
    "n_spikes",
    "time_unit",
    "fs_Hz",
    "max_abs_error_ms",
    "tolerance_ms",
    "output",
    "output_bytes",
    "source",
    "message",
    "log",
)
#: Longest reason shown on a line of the check (the whole message is in the summary and logs).
REASON_CHARS = 200

log = logging.getLogger("spikelab.workflow")


class VerificationFailed(RuntimeError):
    """At least one output is missing, unreadable or differs from its source."""


def collect_rows(json_paths: Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
    """Per-recording results of every verify JSON, sorted by (recording, target), each with
    the ``log`` that holds its details."""
    rows = []
    for path in json_paths:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
        for row in doc["results"]:
            if doc.get("batch"):  # one job exports and verifies a batch
                row["log"] = export_log(row["target"], doc["batch"])
            rows.append(row)
    rows.sort(key=lambda r: (r["recording"], r["target"]))
    return rows


def resolve_rows_fs(
    rows: Iterable[dict[str, Any]],
    default_fs_Hz: float | None = None,
    sheet_fs_Hz: Mapping[str, float] | None = None,
) -> None:
    """Set every row's ``fs_Hz`` to its recording's sampling rate (Hz): the sample sheet's,
    else the one its metadata gave (a verify result with ``fs_Hz_from == "metadata"``), else
    ``default_fs_Hz``, else None. Verify jobs of targets that use no rate are not given the
    sheet's or the config's (so changing them does not re-run those jobs), hence this step."""
    rows = list(rows)
    metadata: dict[str, float] = {}
    for r in rows:
        if r.get("fs_Hz_from") == "metadata" and r.get("fs_Hz") is not None:
            metadata.setdefault(r["recording"], r["fs_Hz"])
    sheet = sheet_fs_Hz or {}
    for r in rows:
        name = r["recording"]
        fs, _ = resolve_fs_Hz(sheet.get(name), {"fs_Hz": metadata.get(name)}, default_fs_Hz)
        r["fs_Hz"] = fs


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return " ".join(str(value).split())  # no tabs or newlines inside a cell


def write_summary(
    json_paths: Sequence[str | os.PathLike],
    out_tsv: str | os.PathLike,
    *,
    default_fs_Hz: float | None = None,
    sheet_fs_Hz: Mapping[str, float] | None = None,
) -> int:
    """Write the TSV summary of ``json_paths`` to ``out_tsv``; return the number of rows.

    ``default_fs_Hz`` (the config's fs_Hz) and ``sheet_fs_Hz`` (recording -> the sample
    sheet's rate, Hz) complete each recording's ``fs_Hz`` (:func:`resolve_rows_fs`).
    """
    rows = collect_rows(json_paths)
    resolve_rows_fs(rows, default_fs_Hz, sheet_fs_Hz)
    lines = ["\t".join(COLUMNS)]
    lines += ["\t".join(_cell(r.get(c)) for c in COLUMNS) for r in rows]
    with atomic_file(out_tsv) as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n", encoding="utf-8")
    bad = sum(1 for r in rows if r["status"] != "ok")
    log.info(
        "wrote %s (%d bytes): %d rows, %d not ok",
        out_tsv,
        Path(out_tsv).stat().st_size,
        len(rows),
        bad,
    )
    return len(rows)


def read_summary(tsv: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of a summary TSV as dicts of strings."""
    with open(tsv, encoding="utf-8") as fh:
        header = fh.readline().rstrip("\n").split("\t")
        return [dict(zip(header, line.rstrip("\n").split("\t"), strict=True)) for line in fh]


def _reason(row: Mapping[str, str]) -> str:
    """The row's message without its source path (the line names it), at most
    :data:`REASON_CHARS` characters."""
    text, source = row.get("message") or row["status"], row.get("source") or ""
    if text.startswith("source: "):
        text = text[len("source: ") :]
    if source:
        text = text.replace(f"{source}: ", "", 1)
    return text if len(text) <= REASON_CHARS else text[: REASON_CHARS - 3] + "..."


def failure_report(rows: Sequence[Mapping[str, str]], tsv: str | os.PathLike) -> list[str]:
    """Lines naming the rows of ``rows`` that are not ``ok``: a header, then one line per bad
    recording and fault (its source, status, the targets it hit, the reason and the log);
    empty when every row is ok."""
    bad = [r for r in rows if r["status"] != "ok"]
    if not bad:
        return []
    per_recording: dict[str, int] = {}
    for r in rows:
        per_recording[r["recording"]] = per_recording.get(r["recording"], 0) + 1
    groups: dict[tuple[str, str, str], list[Mapping[str, str]]] = {}
    for r in bad:
        groups.setdefault((r["recording"], r["status"], _reason(r)), []).append(r)
    n_bad_recordings = len({r["recording"] for r in bad})
    lines = [
        f"{len(bad)} of {len(rows)} outputs failed, from {n_bad_recordings} of "
        f"{len(per_recording)} recordings (every row: {os.fspath(tsv)}):"
    ]
    for (name, status, reason), group in groups.items():
        n = per_recording[name]
        targets = (
            f"all {n} targets"
            if len(group) == n and n > 1
            else ", ".join(r["target"] for r in group)
        )
        source = group[0].get("source") or "?"
        where = f"; log: {group[0]['log']}" if group[0].get("log") else ""
        lines.append(f"  {source} ({name}): {status} in {targets}: {reason}{where}")
    return lines


def check_summary(tsv: str | os.PathLike, stamp: str | os.PathLike) -> int:
    """Raise :class:`VerificationFailed` naming every row not ``ok`` (:func:`failure_report`);
    else write ``stamp``. Returns the number of verified outputs.
    """
    rows = read_summary(tsv)
    report = failure_report(rows, tsv)
    if report:
        raise VerificationFailed("\n".join(report))
    with atomic_file(stamp) as tmp:
        Path(tmp).write_text(f"{len(rows)} outputs verified, see {os.fspath(tsv)}\n")
    return len(rows)


def run_summary_job(
    json_paths: Sequence[str],
    out_tsv: str,
    log_path: str | None,
    *,
    default_fs_Hz: float | None = None,
    sheet_fs_Hz: Mapping[str, float] | None = None,
) -> int:
    """Entry point of ``scripts/summary.py``."""
    setup_logging(log_path)
    return write_summary(json_paths, out_tsv, default_fs_Hz=default_fs_Hz, sheet_fs_Hz=sheet_fs_Hz)


def run_check_job(
    tsv: str,
    stamp: str,
    log_path: str | None,
    *,
    declared: Mapping[str, Any] | None = None,
    results_dir: str = RESULTS,
) -> int:
    """Entry point of ``scripts/check.py``: check the summary and list stale outputs.

    The log is the report itself, a few lines: one per bad recording and fault
    (:func:`failure_report`), and one naming what in ``results_dir`` belongs to no current
    recording or target (``declared``: the rules' ``declared`` param, see
    :func:`spikelab.workflow.stale.declared_from_params`). When an output is not ok, the job
    exits with status 1, or, without ``log_path``, prints the report to stderr first; with a
    log, the Snakefile shows it in place of Snakemake's error block
    (:mod:`spikelab.workflow.check_report`). When all are ok, only the stale line (if any) goes
    to stderr.
    """
    from spikelab.workflow.stale import declared_from_params, find_stale, stale_line

    lines: list[str] = []
    try:
        n = check_summary(tsv, stamp)
    except VerificationFailed as exc:
        failed = True
        lines += str(exc).splitlines()
    else:
        failed = False
        lines.append(f"all {n} outputs verified (every row: {tsv})")
    stale = ""
    if declared is not None:
        outputs, sources = declared_from_params(declared)
        entries = find_stale(results_dir, outputs, sources)
        stale = stale_line(entries, results_dir) if entries else ""
    if stale:
        lines.append(stale)
    if log_path is not None:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        Path(log_path).write_text("\n".join(lines) + "\n", encoding="utf-8")
    if failed:
        if log_path is None:
            print("\n".join(lines), file=sys.stderr)
        raise SystemExit(1)
    if stale:
        print(stale, file=sys.stderr)
    return n
