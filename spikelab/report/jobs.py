"""The report's jobs: draw the figures of a batch of recordings, and tabulate every recording.

A figure job reads each input of its batch with its format's (safe) loader, draws its
overview figure (:func:`~spikelab.report.figures.draw_recording_figure`) and writes the
recording's numbers
(units, spikes, empty units, start, duration, mean rate) to one JSON file per batch::

    {"batch": "small", "recordings": [{"recording": "small", "status": "ok", "n_units": 8, ...}]}

A recording that cannot be read gets a figure saying so (``status: unreadable``) with
``on_bad_recording="continue"``, as the export jobs write a failure record; with ``"fail"`` the
job fails after drawing the others. The table job joins these numbers with the workflow's
verify summary (``results/summary.tsv``: one row per recording and target) into one row per
recording, written as TSV and as a small self-contained HTML page for the report.
"""

from __future__ import annotations

import contextlib
import html
import json
import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spikelab import isolation
from spikelab.formats.atomic import atomic_file, remove_stale_temporaries
from spikelab.formats.registry import ResourceModel
from spikelab.jobs import (
    DRAWING,
    BatchError,
    Fault,
    Limits,
    RecordingLimits,
    SourceOf,
    for_each_recording,
    setup_logging,
)

__all__ = [
    "STAT_COLUMNS",
    "RESOURCES",
    "FigureBatchError",
    "FigureItem",
    "figure_params",
    "draw_batch",
    "write_stats",
    "recordings_table",
    "write_recordings_table",
    "run_figures_job",
    "run_table_job",
]

log = logging.getLogger("spikelab.report")

#: Per-recording columns of the table, before the per-target ``<target> bytes``/``verify``.
STAT_COLUMNS = (
    "recording",
    "n_units",
    "n_spikes",
    "duration_s",
    "mean_rate_Hz",
    "n_empty_units",
    "start_time_ms",
)
#: Their headings in the HTML page.
STAT_HEADINGS = (
    "recording",
    "units",
    "spikes",
    "duration (s)",
    "mean rate (Hz)",
    "empty units",
    "start (ms)",
)
#: What a figure job asks a scheduler for (matplotlib; one recording in memory at a time).
RESOURCES = ResourceModel(base_mem_mb=400)


class FigureBatchError(BatchError):
    """Some recordings of a batch could not be read (``on_bad_recording="fail"``)."""


@dataclass(frozen=True)
class FigureItem(SourceOf):
    """One recording of a batch: name, source, figure path (.png) and, if known, the
    session's wall-clock start (ISO 8601, e.g. from the sample sheet) for the title; the
    source's format, reader options and the sheet's rate (Hz) for reading it."""

    recording: str
    source: str
    figure: str
    session_start_time: str | None = None
    sheet_fs_Hz: float | None = None
    source_format: str | None = None
    read_options: tuple[tuple[str, Any], ...] = ()


def figure_params(
    name: str,
    sheet_options: Iterable[tuple[str, str]],
    *,
    sheet_fs_Hz: float | None = None,
    source_format: str | None = None,
    read_options: Iterable[tuple[str, Any]] = (),
) -> dict[str, Any] | str:
    """The per-recording params of a figure job: the name and, for the title, the sample
    sheet's ``session_start_time`` (ISO 8601) or None; for an input other than a pickle, its
    format, reader options and the sheet's rate (Hz), when given. The name alone when there
    is nothing else (small job records, see
    :meth:`~spikelab.workflow.export.RecordingParams.as_params`)."""
    start = dict(sheet_options).get("session_start_time")
    if start is None and source_format is None and sheet_fs_Hz is None and not read_options:
        return name
    params = {"recording": name, "session_start_time": start}
    if source_format is not None:
        params["source_format"] = source_format
    if sheet_fs_Hz is not None:
        params["sheet_fs_Hz"] = sheet_fs_Hz
    if read_options:
        params["read_options"] = dict(sorted(read_options))
    return params


def draw_batch(
    items: Sequence[FigureItem],
    *,
    on_bad_recording: str = "continue",
    pickle_loading: Mapping[str, Any] | None = None,
    limits: RecordingLimits | None = None,
    default_fs_Hz: float | None = None,
) -> list[dict[str, Any]]:
    """Draw the figure of every item; return each recording's numbers (JSON-ready dicts).
    With ``limits``, each recording is read and drawn in a child process under them.

    Logs one INFO line per figure written (path, bytes, seconds). A source that cannot be read
    is logged as an ERROR and, with ``on_bad_recording="continue"``, gets a figure saying so;
    with ``"fail"`` a :class:`FigureBatchError` naming every bad source is raised at the end.
    ``pickle_loading`` holds ``load_spikedata_from_pickle``'s opt-ins (``trusted``,
    ``allow_globals``) for sources the user trusts; default: the restricted loader.
    ``default_fs_Hz`` (Hz) is the config's rate for inputs in samples that give none.
    """
    from spikelab.report.figures import draw_failure_figure, draw_recording_figure

    def draw(item: FigureItem) -> dict[str, Any]:
        t0 = time.perf_counter()
        sd = item.load(pickle_loading, default_fs_Hz)
        t_read = time.perf_counter() - t0
        isolation.phase(DRAWING)
        res = draw_recording_figure(
            sd, item.recording, item.figure, session_start_time=item.session_start_time
        )
        log.info(
            "wrote %s (%d bytes, %.3f s): %s, %d units, %d spikes (read %s in %.3f s)",
            res.path,
            res.bytes,
            res.seconds,
            res.mode,
            res.stats.n_units,
            res.stats.n_spikes,
            item.source,
            t_read,
        )
        row = {"recording": item.recording, "source": item.source, "figure": item.figure}
        return {**row, "status": "ok", "message": "", "mode": res.mode, **res.stats.as_dict()}

    def unreadable(item: FigureItem, fault: Fault, keep_going: bool) -> dict[str, Any]:
        t0 = time.perf_counter()
        remove_stale_temporaries(Path(item.figure))  # of a child that died drawing
        log.error("cannot read %s: %s", item.recording, fault.error)
        if keep_going:
            size = draw_failure_figure(item.recording, item.figure, fault.error)
            seconds = time.perf_counter() - t0
            log.info("wrote %s (%d bytes, %.3f s): cannot be read", item.figure, size, seconds)
        row = {"recording": item.recording, "source": item.source, "figure": item.figure}
        return {**row, "status": "unreadable", "message": fault.error}

    def context(item: FigureItem) -> str:
        return f"while drawing {item.figure} from {item.source}"

    def isolate(item: FigureItem) -> Limits:
        return limits.for_source(item.source, RESOURCES)

    return for_each_recording(
        items,
        draw,
        on_fault=unreadable,
        on_bad_recording=on_bad_recording,
        context=context,
        failed="{bad} of {total} recordings could not be read",
        error_type=FigureBatchError,
        isolate=None if limits is None else isolate,
        per_child=None if limits is None else limits.per_child_for(pickle_loading),
        warm_up=lambda: _warm_up(draw_recording_figure),  # for workers after the first
    )


def _warm_up(draw: Any) -> None:
    """Import matplotlib (and draw once), so that the workers forked after it start with it."""
    import tempfile

    from spikelab.spikedata.spikedata import SpikeData

    with tempfile.TemporaryDirectory(prefix="spikelab-warm-up-") as tmp:
        with contextlib.suppress(Exception):
            draw(SpikeData([[1.0]], length=2.0), "warm_up", f"{tmp}/warm_up.png")


def _write_text(out: str | os.PathLike, text: str, n_rows: int) -> None:
    """Write ``text`` to ``out`` atomically and log it (path, bytes, seconds, rows)."""
    t0 = time.perf_counter()
    with atomic_file(out) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    log.info(
        "wrote %s (%d bytes, %.3f s): %d recordings",
        out,
        Path(out).stat().st_size,
        time.perf_counter() - t0,
        n_rows,
    )


def write_stats(rows: Sequence[dict[str, Any]], out_json: str | os.PathLike, *, batch: str):
    """Write the numbers of one batch (from :func:`draw_batch`) to ``out_json`` atomically."""
    doc = {"batch": batch, "recordings": list(rows)}
    _write_text(out_json, json.dumps(doc, indent=1, allow_nan=False) + "\n", len(rows))


def _number(value: Any, fmt: str = "") -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        if fmt:
            return format(value, fmt)
        return np.format_float_positional(value, trim="-")
    return str(value)


def recordings_table(
    stats_jsons: Iterable[str | os.PathLike], summary_tsv: str | os.PathLike
) -> tuple[list[str], list[list[str]]]:
    """Header and rows (strings) of the per-recording table; see :func:`write_recordings_table`."""
    from spikelab.workflow.summary import read_summary

    stats: dict[str, dict[str, Any]] = {}
    for path in stats_jsons:
        with open(path, encoding="utf-8") as fh:
            for row in json.load(fh)["recordings"]:
                stats[row["recording"]] = row
    verified: dict[str, dict[str, dict[str, str]]] = {}
    targets: list[str] = []
    for row in read_summary(summary_tsv):
        if row["target"] not in targets:
            targets.append(row["target"])
        verified.setdefault(row["recording"], {})[row["target"]] = row
    targets.sort()
    header = list(STAT_COLUMNS)
    for target in targets:
        header += [f"{target} bytes", f"{target} verify"]
    rows = []
    for name in sorted(set(stats) | set(verified)):
        st = stats.get(name, {})
        duration = st.get("duration_ms")
        cells = [
            name,
            _number(st.get("n_units")),
            _number(st.get("n_spikes")),
            _number(None if duration is None else duration / 1000.0),
            _number(st.get("mean_rate_Hz"), ".4g"),
            _number(st.get("n_empty_units")),
            _number(st.get("start_time_ms")),
        ]
        for target in targets:
            v = verified.get(name, {}).get(target, {})
            cells += [v.get("output_bytes", ""), v.get("status", "")]
        rows.append(cells)
    return header, rows


def _kilobytes(value: str) -> str:
    return f"{int(value) / 1000:,.1f} kB" if value.isdigit() else value


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]], title: str) -> str:
    """A self-contained HTML page (inline CSS, no scripts) showing the table.

    The per-target ``<target> bytes``/``<target> verify`` pairs go under one heading per
    target; sizes are shown in kB (the exact bytes as the cell's tooltip).
    """
    n_stats = len(STAT_COLUMNS)
    targets = [h[: -len(" bytes")] for h in header[n_stats::2]]
    top = "".join(f'<th rowspan="2">{html.escape(h)}</th>' for h in STAT_HEADINGS)
    top += "".join(f'<th colspan="2">{html.escape(t)}</th>' for t in targets)
    sub = "<th>size</th><th>verify</th>" * len(targets)
    body = []
    for row in rows:
        cells = [f"<td>{html.escape(row[0])}</td>"]
        cells += [f'<td class="num">{html.escape(v)}</td>' for v in row[1:n_stats]]
        for size, status in zip(row[n_stats::2], row[n_stats + 1 :: 2], strict=True):
            tip = f' title="{html.escape(size)} bytes"' if size else ""
            cells.append(f'<td class="num"{tip}>{html.escape(_kilobytes(size))}</td>')
            cls = "ok" if status == "ok" else "bad"
            cells.append(f'<td class="{cls}">{html.escape(status)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>"
        "body{font:13px system-ui,sans-serif;margin:12px;color:#111;background:#fff}"
        "table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:3px 7px}"
        "th{background:#eee}td.num{text-align:right;white-space:nowrap;"
        "font-variant-numeric:tabular-nums}td.ok{color:#0a6b0a}td.bad{color:#b00;"
        "font-weight:bold}</style></head><body>"
        f"<h3>{html.escape(title)}</h3><table><thead><tr>{top}</tr><tr>{sub}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table></body></html>\n"
    )


def write_recordings_table(
    stats_jsons: Sequence[str | os.PathLike],
    summary_tsv: str | os.PathLike,
    out_tsv: str | os.PathLike,
    out_html: str | os.PathLike | None = None,
) -> int:
    """Write one row per recording to ``out_tsv`` (and ``out_html``); return the row count.

    Columns: :data:`STAT_COLUMNS` (duration in s, mean rate in Hz per unit, start in ms;
    empty for a recording that could not be read), then for every target of the summary its
    output's size (``<target> bytes``) and verify status (``<target> verify``: ok, mismatch,
    unreadable or export_failed).
    """
    header, rows = recordings_table(stats_jsons, summary_tsv)
    for out, text in (
        (out_tsv, "\n".join("\t".join(r) for r in [header, *rows]) + "\n"),
        (out_html, None if out_html is None else _html_table(header, rows, "Recordings")),
    ):
        if out is not None:
            _write_text(out, text, len(rows))
    return len(rows)


def run_figures_job(
    *,
    recordings: Sequence[Mapping[str, Any]],
    sources: Sequence[str],
    figures: Sequence[str],
    stats_json: str,
    batch: str,
    on_bad_recording: str,
    log_path: str | None,
    pickle_loading: Mapping[str, Any] | None = None,
    isolation: Mapping[str, Any] | None = None,
    mem_mb: float | None = None,
    default_fs_Hz: float | None = None,
) -> list[dict[str, Any]]:
    """Entry point of ``scripts/report_figures.py``: draw one batch and write its numbers.

    ``recordings`` holds one mapping per source, in order (see :func:`figure_params`):
    ``recording`` (the name), ``session_start_time`` (ISO 8601 or None) and, for inputs
    other than pickles, ``source_format``, ``read_options`` and ``sheet_fs_Hz``. Each
    recording is drawn in a child process under ``isolation`` (see
    :func:`spikelab.workflow.export.run_export_job`).
    """
    setup_logging(log_path)
    if not (len(recordings) == len(sources) == len(figures)):
        raise ValueError(
            f"{len(recordings)} recordings, {len(sources)} sources and {len(figures)} figures"
        )
    items = []
    for rec, src, fig in zip(recordings, sources, figures, strict=True):
        rec = {"recording": rec} if isinstance(rec, str) else rec  # a name alone
        items.append(
            FigureItem(
                str(rec["recording"]),
                str(src),
                str(fig),
                rec.get("session_start_time"),
                rec.get("sheet_fs_Hz"),
                rec.get("source_format"),
                tuple(sorted((rec.get("read_options") or {}).items())),
            )
        )
    limits = RecordingLimits.from_params(isolation, mem_mb)
    rows = draw_batch(
        items,
        on_bad_recording=on_bad_recording,
        pickle_loading=pickle_loading,
        limits=limits,
        default_fs_Hz=default_fs_Hz,
    )
    write_stats(rows, stats_json, batch=batch)
    return rows


def run_table_job(
    *,
    stats_jsons: Sequence[str],
    summary_tsv: str,
    out_tsv: str,
    out_html: str | None,
    log_path: str | None,
) -> int:
    """Entry point of ``scripts/report_table.py``."""
    setup_logging(log_path)
    return write_recordings_table(stats_jsons, summary_tsv, out_tsv, out_html)
