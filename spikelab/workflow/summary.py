"""The summary table of every recording x target, and the final check that fails the run.

``results/summary.tsv`` has one row per recording and target, sorted by recording then
target, with the columns :data:`COLUMNS` (empty cells where a value does not apply).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from spikelab.formats.atomic import atomic_file
from spikelab.jobs import setup_logging

__all__ = [
    "COLUMNS",
    "VerificationFailed",
    "collect_rows",
    "write_summary",
    "read_summary",
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
)

log = logging.getLogger("spikelab.workflow")


class VerificationFailed(RuntimeError):
    """At least one output is missing, unreadable or differs from its source."""


def collect_rows(json_paths: Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
    """Per-recording results of every verify JSON, sorted by (recording, target)."""
    rows = []
    for path in json_paths:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
        rows.extend(doc["results"])
    rows.sort(key=lambda r: (r["recording"], r["target"]))
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return " ".join(str(value).split())  # no tabs or newlines inside a cell


def write_summary(json_paths: Sequence[str | os.PathLike], out_tsv: str | os.PathLike) -> int:
    """Write the TSV summary of ``json_paths`` to ``out_tsv``; return the number of rows."""
    rows = collect_rows(json_paths)
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


def check_summary(tsv: str | os.PathLike, stamp: str | os.PathLike) -> int:
    """Raise :class:`VerificationFailed` listing every row not ``ok``; else write ``stamp``.

    Returns the number of verified outputs.
    """
    rows = read_summary(tsv)
    bad = [r for r in rows if r["status"] != "ok"]
    if bad:
        lines = [f"{r['target']}  {r['recording']}: {r['status']}: {r['message']}" for r in bad]
        raise VerificationFailed(
            f"{len(bad)} of {len(rows)} outputs failed (see {os.fspath(tsv)}):\n  "
            + "\n  ".join(lines)
        )
    with atomic_file(stamp) as tmp:
        Path(tmp).write_text(f"{len(rows)} outputs verified, see {os.fspath(tsv)}\n")
    log.info("all %d outputs verified", len(rows))
    return len(rows)


def run_summary_job(json_paths: Sequence[str], out_tsv: str, log_path: str | None) -> int:
    """Entry point of ``scripts/summary.py``."""
    setup_logging(log_path)
    return write_summary(json_paths, out_tsv)


def run_check_job(tsv: str, stamp: str, log_path: str | None) -> int:
    """Entry point of ``scripts/check.py``: on failure, print the list and exit with status 1."""
    setup_logging(log_path)
    try:
        return check_summary(tsv, stamp)
    except VerificationFailed as exc:
        log.error("%s", exc)
        raise SystemExit(1) from None
