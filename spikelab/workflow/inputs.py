"""Find the recordings to convert, validate their names, and resolve their sampling rates.

An input is a file or folder of any format the registry reads: a SpikeData pickle
(``.pkl``), an NWB file (``.nwb``), an HDF5 file (``.h5``/``.hdf5``) or a KiloSort/Phy
folder (holding ``spike_times.npy`` and ``params.py``); the kind comes from the suffix or the
folder's content (:func:`spikelab.formats.registry.input_format_for`), or from a sample
sheet's ``format`` column. Three ways to name the inputs (exactly one is used):

- a directory: every input directly in it (hidden names are skipped); the recording name is
  the file name without its suffix (a folder's name);
- a glob pattern (``**`` matches across folders); the recording name is the file stem (a file
  of another suffix is read as a pickle, as before inputs of other kinds existed);
- a sample sheet: a TSV file with a header line and the columns ``recording`` and ``path``
  and optionally ``fs_Hz`` (Hz), ``format``, reader options (columns named after a format's
  ``input_keys``, e.g. ``spike_times_dataset`` for an HDF5 file of another writer) and NWB
  writer fields. Relative paths are relative to the sheet's folder; blank lines and lines
  starting with ``#`` are skipped.

The config's ``inputs.read_options.<format>`` gives reader options for every input of that
format; a sheet's cells override them.

A recording name becomes part of output file names, so it must be a plain file name:
letters, digits, ``.``, ``_``, ``+`` and ``-``, starting with a letter or digit, at most
:data:`MAX_NAME_LENGTH` characters. Everything is checked up front and every problem is
reported at once (:class:`InputError`).
"""

from __future__ import annotations

import csv
import glob as _glob
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from spikelab.formats.registry import (
    DEFAULT_INPUT_FORMAT,
    all_formats,
    format_names,
    get_format,
    input_format_for,
)
from spikelab.workflow import WorkflowConfigError

__all__ = [
    "NAME_PATTERN",
    "MAX_NAME_LENGTH",
    "InputError",
    "Recording",
    "name_problem",
    "check_recordings",
    "recordings_from_directory",
    "recordings_from_glob",
    "recordings_from_sample_sheet",
    "discover_recordings",
    "resolve_fs_Hz",
]

#: Regular expression (without anchors) of a valid recording name; also the Snakemake
#: wildcard constraint of ``{recording}``.
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}"
MAX_NAME_LENGTH = 200
#: Optional per-recording columns a sample sheet may carry: every format's writer keywords
#: that may differ per recording (the NWB subject and session fields).
SHEET_OPTION_COLUMNS = tuple(dict.fromkeys(c for f in all_formats() for c in f.sheet_columns))
#: Reader options a sample sheet may give per input (every format's ``input_keys``).
INPUT_OPTION_COLUMNS = tuple(dict.fromkeys(c for f in all_formats() for c in f.input_keys))
SAMPLE_SHEET_COLUMNS = (
    "recording",
    "path",
    "fs_Hz",
    "format",
    *SHEET_OPTION_COLUMNS,
    *INPUT_OPTION_COLUMNS,
)

_NAME_RE = re.compile(rf"\A{NAME_PATTERN}\Z")
_log = logging.getLogger(__name__)


class InputError(WorkflowConfigError):
    """The configured inputs cannot be used (bad names, missing files, a malformed sheet)."""


@dataclass(frozen=True)
class Recording:
    """One input pickle.

    Attributes
    ----------
    name : str
        Recording name, used in output paths (``results/<format>/<name>.<ext>``).
    path : str
        Path of the pickle, as found (relative to the working directory, or absolute).
    fs_Hz : float or None
        Sampling rate (Hz) from the sample sheet, if it gives one.
    sheet_options : tuple of (key, value)
        Writer keywords from the sample sheet's optional columns (subject_id, species, ...);
        each target takes those its format lists in ``sheet_columns``.
    size_bytes : int or None
        Size of the input (bytes; a folder's input files together) when discovery saw it,
        for the jobs' memory estimates.
    format : str
        Registry name of the input's format (``pickle``, ``nwb``, ``hdf5``, ``kilosort``).
    read_options : tuple of (key, value)
        Reader keywords for the input (config ``inputs.read_options`` and sheet cells).
    """

    name: str
    path: str
    fs_Hz: float | None = None
    sheet_options: tuple[tuple[str, str], ...] = ()
    size_bytes: int | None = field(default=None, compare=False)
    format: str = DEFAULT_INPUT_FORMAT
    read_options: tuple[tuple[str, Any], ...] = ()

    @property
    def reads_fs(self) -> bool:
        """True when reading this input may take a sampling rate (times in samples)."""
        return get_format(self.format).input_uses_fs

    @property
    def input_files(self) -> list[str]:
        """The files whose changes re-run this recording's conversions."""
        if self.path.startswith("s3://"):
            return [self.path]
        return get_format(self.format).input_files(self.path)


def name_problem(name: Any) -> str | None:
    """Return why ``name`` cannot be a recording name, or None when it can."""
    if not isinstance(name, str) or not name:
        return "is empty" if name == "" else f"is not a string ({type(name).__name__})"
    if "/" in name or "\\" in name or os.sep in name:
        return "contains a path separator"
    if name.startswith("."):
        return "starts with '.' (a hidden file or a reference like '..')"
    if any(c.isspace() for c in name):
        return "contains whitespace"
    if len(name) > MAX_NAME_LENGTH:
        return f"is longer than {MAX_NAME_LENGTH} characters"
    if not _NAME_RE.match(name):
        bad = sorted({c for c in name if not (c.isascii() and (c.isalnum() or c in "._+-"))})
        if bad:
            return f"contains {''.join(bad)!r}"
        return "must start with a letter or a digit"
    return None


def check_recordings(recordings: Sequence[Recording], *, source: str) -> list[Recording]:
    """Validate names (format, duplicates, case collisions); return them sorted by name.

    ``source`` describes where the recordings came from, for the error message.
    """
    problems: list[str] = []
    for rec in recordings:
        why = name_problem(rec.name)
        if why:
            problems.append(f"recording name {rec.name!r} (from {rec.path}) {why}")
    by_name: dict[str, list[Recording]] = {}
    by_folded: dict[str, set[str]] = {}
    for rec in recordings:
        by_name.setdefault(rec.name, []).append(rec)
        by_folded.setdefault(rec.name.casefold(), set()).add(rec.name)
    for name, recs in by_name.items():
        if len(recs) > 1:
            paths = ", ".join(r.path for r in recs)
            problems.append(f"recording name {name!r} is used by {len(recs)} files: {paths}")
    for names in by_folded.values():
        if len(names) > 1:
            problems.append(
                "recording names "
                + ", ".join(repr(n) for n in sorted(names))
                + " differ only in case (their outputs would collide on macOS and Windows)"
            )
    if problems:
        raise InputError(
            f"{source}: {len(problems)} problem(s) with the recordings:\n  - "
            + "\n  - ".join(problems)
            + "\nRecording names may hold letters, digits, '.', '_', '+' and '-' and must start "
            "with a letter or digit; rename the files or give names in a sample sheet."
        )
    return sorted(recordings, key=lambda r: r.name)


def _stem(path: str, fmt: str = DEFAULT_INPUT_FORMAT) -> str:
    """The recording name of input ``path``: its base name without the format's suffix."""
    base = os.path.basename(os.path.normpath(path))
    for suffix in get_format(fmt).input_suffixes:
        if base.lower().endswith(suffix):
            return base[: -len(suffix)]
    return base if os.path.isdir(path) else os.path.splitext(base)[0]


def _size(path: str, fmt: str) -> int:
    """Size in bytes of an input (a folder's input files together)."""
    return sum(os.path.getsize(f) for f in get_format(fmt).input_files(path))


def recordings_from_directory(directory: str | os.PathLike) -> list[Recording]:
    """Every input directly in ``directory`` (hidden names skipped), unsorted: files of a
    known suffix and folders a folder format recognises; other entries are ignored.

    ``directory`` may be an S3 prefix, ``s3://bucket/path/``: every ``*.pkl`` object directly
    under it (see :func:`spikelab.s3.list_pickles`); the paths are then ``s3://`` URLs.
    """
    directory = os.fspath(directory)
    if directory.startswith("s3://"):
        from spikelab import s3

        return [Recording(name, url, size_bytes=n) for name, url, n in s3.list_pickles(directory)]
    if not os.path.isdir(directory):
        raise InputError(
            f"inputs.directory: {directory!r} is not a directory "
            f"(relative paths start at the working directory {os.getcwd()})"
        )
    out = []
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = os.path.join(directory, entry.name)
            is_dir = entry.is_dir()  # follows symlinks
            if not is_dir and not entry.is_file():
                continue
            fmt = input_format_for(path, is_dir=is_dir)
            if fmt is None:
                continue
            out.append(
                Recording(
                    _stem(path, fmt.name), path, size_bytes=_size(path, fmt.name), format=fmt.name
                )
            )
    return out


def recordings_from_glob(pattern: str) -> list[Recording]:
    """Every file or input folder matching the glob ``pattern`` (``**`` recursive), named by
    its stem; a file of no known suffix is read as a pickle."""
    if pattern.startswith("s3://"):
        raise InputError(
            f"inputs.glob {pattern!r}: glob patterns work on local files only; for S3 set "
            "inputs.directory to the prefix (s3://bucket/path/) or list the objects in a "
            "sample sheet"
        )
    found: list[tuple[str, Any]] = []
    folders: list[str] = []
    for p in _glob.glob(pattern, recursive=True):
        is_dir = os.path.isdir(p)
        if not is_dir and not os.path.isfile(p):
            continue
        fmt = input_format_for(p, is_dir=is_dir)
        if fmt is None:
            if is_dir:
                continue
            fmt = get_format(DEFAULT_INPUT_FORMAT)
        elif is_dir:
            folders.append(os.path.join(os.path.normpath(p), ""))
        found.append((p, fmt))
    out = []
    for p, fmt in found:
        if any(os.path.normpath(p).startswith(f) for f in folders):
            continue  # a file of an input folder (spike_times.npy of a Phy folder)
        out.append(Recording(_stem(p, fmt.name), p, size_bytes=_size(p, fmt.name), format=fmt.name))
    return out


def _parse_fs(text: str, where: str) -> float | None:
    text = text.strip()
    if not text or text.lower() in ("na", "nan", "none", "null"):
        return None
    try:
        fs = float(text)
    except ValueError:
        raise InputError(f"{where}: fs_Hz {text!r} is not a number (Hz)") from None
    if not math.isfinite(fs) or fs <= 0:
        raise InputError(f"{where}: fs_Hz {text!r} must be a sampling rate > 0 Hz")
    return fs


def _sheet_format(given: str, path: str, remote: bool) -> str:
    """The format of a sample sheet's input: its ``format`` cell, else from the path."""
    if given:
        if given not in format_names():
            raise InputError(f"format {given!r} is not one of {', '.join(format_names())}")
        fmt = get_format(given)
        if remote and fmt.is_dir:
            raise InputError(f"{path}: {given} folders on S3 are not supported; copy it locally")
        exists = os.path.isdir(path) if fmt.is_dir else os.path.isfile(path)
        if not remote and not exists:
            kind = "folder" if fmt.is_dir else "file"
            raise InputError(f"no such {kind} {path!r}")
        return given
    if remote:
        found = input_format_for(path, is_dir=False)
        return found.name if found else DEFAULT_INPUT_FORMAT
    if os.path.isdir(path):
        found = input_format_for(path, is_dir=True)
        if found is None:
            raise InputError(
                f"{path!r} is a folder that no format reads (a KiloSort/Phy folder holds "
                "spike_times.npy and params.py)"
            )
        return found.name
    if not os.path.isfile(path):
        raise InputError(f"no such file {path!r}")
    found = input_format_for(path, is_dir=False)
    return found.name if found else DEFAULT_INPUT_FORMAT


def _scalar_cell(text: str) -> Any:
    """A sheet cell read as a YAML scalar (``1.0`` a number, ``true`` a bool, else text)."""
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, str | int | float | bool) else text


def _sheet_read_options(fmt: str, cells: Mapping[str, str]) -> tuple[tuple[str, Any], ...]:
    """The reader options of one sheet row (non-empty cells), checked against ``fmt``."""
    given = {k: v.strip() for k, v in cells.items() if v.strip()}
    keys = get_format(fmt).input_keys
    wrong = [k for k in given if k not in keys]
    if wrong:
        raise InputError(
            f"column(s) {', '.join(wrong)} do not apply to a {fmt} input (it takes "
            f"{', '.join(keys) or 'no reader options'})"
        )
    return tuple(sorted((k, _scalar_cell(v)) for k, v in given.items()))


def read_options_from_config(block: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The config's ``inputs.read_options`` (format -> reader keywords), checked against
    each format's ``input_keys``."""
    out: dict[str, dict[str, Any]] = {}
    for fmt, options in (block or {}).items():
        if fmt not in format_names():
            raise InputError(
                f"inputs.read_options.{fmt}: not a format ({', '.join(format_names())})"
            )
        keys = get_format(fmt).input_keys
        wrong = [k for k in (options or {}) if k not in keys]
        if wrong:
            raise InputError(
                f"inputs.read_options.{fmt}: {', '.join(wrong)} not reader option(s) of {fmt} "
                f"inputs (it takes {', '.join(keys) or 'none'})"
            )
        out[fmt] = {k: v for k, v in (options or {}).items() if v is not None}
    return out


def recordings_from_sample_sheet(sheet: str | os.PathLike) -> list[Recording]:
    """Recordings listed in a TSV sample sheet (columns ``recording``, ``path``[, ``fs_Hz``]).

    Optional columns ``subject_id``, ``species``, ``sex``, ``age`` (ISO 8601, e.g. P90D),
    ``session_start_time`` (ISO 8601 with zone), ``session_description`` and
    ``electrode_location`` (brain area) go to the NWB
    export of that recording, overriding the config's ``nwb`` block; empty cells are skipped.

    Relative paths are taken relative to the sheet's folder; every listed file must exist.
    """
    sheet = os.fspath(sheet)
    if not os.path.isfile(sheet):
        raise InputError(f"inputs.sample_sheet: {sheet!r} is not a file")
    base = os.path.dirname(sheet)
    with open(sheet, newline="", encoding="utf-8-sig") as fh:
        lines = [
            (i, line)
            for i, line in enumerate(fh, start=1)
            if line.strip() and not line.lstrip().startswith("#")
        ]
    if not lines:
        raise InputError(f"{sheet}: the sample sheet is empty (it needs a header line)")
    rows = list(csv.reader([line for _, line in lines], delimiter="\t"))
    header = [h.strip() for h in rows[0]]
    unknown = [h for h in header if h not in SAMPLE_SHEET_COLUMNS]
    missing = [h for h in ("recording", "path") if h not in header]
    if unknown or missing or len(set(header)) != len(header):
        raise InputError(
            f"{sheet}, line {lines[0][0]}: the header must name the tab-separated columns "
            f"recording and path, and optionally fs_Hz, format, "
            f"{', '.join(SHEET_OPTION_COLUMNS)} and the reader options "
            f"{', '.join(INPUT_OPTION_COLUMNS)}; got {header!r}"
            + (f" (unknown: {', '.join(unknown)})" if unknown else "")
            + (f" (missing: {', '.join(missing)})" if missing else "")
        )
    col = {h: header.index(h) for h in header}
    out: list[Recording] = []
    problems: list[str] = []
    for (lineno, _), row in zip(lines[1:], rows[1:], strict=True):
        where = f"{sheet}, line {lineno}"
        if len(row) != len(header):
            problems.append(f"{where}: {len(row)} fields for {len(header)} columns")
            continue
        name = row[col["recording"]].strip()
        path = row[col["path"]].strip()
        if not path:
            problems.append(f"{where}: empty path")
            continue
        remote = path.startswith("s3://")
        full = path if remote or os.path.isabs(path) or not base else os.path.join(base, path)
        try:
            fs = _parse_fs(row[col["fs_Hz"]], where) if "fs_Hz" in col else None
        except InputError as exc:
            problems.append(str(exc))
            continue
        try:
            fmt = _sheet_format(row[col["format"]].strip() if "format" in col else "", full, remote)
            read = _sheet_read_options(
                fmt, {c: row[col[c]] for c in INPUT_OPTION_COLUMNS if c in col}
            )
        except InputError as exc:
            problems.append(f"{where}: recording {name!r}: {exc}")
            continue
        options = tuple(
            (c, row[col[c]].strip())
            for c in SHEET_OPTION_COLUMNS
            if c in col and row[col[c]].strip()
        )
        size = None if remote else _size(full, fmt)
        out.append(Recording(name, full, fs, options, size, fmt, read))
    remote = [r.path for r in out if r.path.startswith("s3://")]
    if remote:  # checked together: one listing per S3 folder, not one request per object
        from spikelab import s3

        sizes = s3.object_sizes(remote, what=f"inputs.sample_sheet {sheet}:")
        problems += [
            f"recording {r.name!r}: no such object {r.path}" for r in out if r.path not in sizes
        ]
        out = [replace(r, size_bytes=sizes.get(r.path, r.size_bytes)) for r in out]
    if problems:
        raise InputError(f"{sheet}: {len(problems)} problem(s):\n  - " + "\n  - ".join(problems))
    return out


def discover_recordings(inputs: Mapping[str, Any]) -> list[Recording]:
    """The recordings named by the ``inputs`` config block, validated and sorted by name.

    Exactly one of ``directory``, ``glob`` and ``sample_sheet`` must be set (not null).
    """
    given = {k: inputs.get(k) for k in ("directory", "glob", "sample_sheet")}
    chosen = [k for k, v in given.items() if v not in (None, "")]
    if len(chosen) != 1:
        seen = ", ".join(f"{k}: {'null' if v is None else repr(v)}" for k, v in given.items())
        raise InputError(
            "inputs: set exactly one of inputs.directory, inputs.glob and inputs.sample_sheet "
            f"(the others null); got {len(chosen) or 'none'} set: {{{seen}}}"
        )
    kind = chosen[0]
    where = f"inputs.{kind} {given[kind]!r}"
    if kind == "directory":
        recs = recordings_from_directory(given[kind])
        empty = (
            f"{where}: no input in the folder (*.pkl, *.nwb, *.h5, *.hdf5 files or "
            "KiloSort/Phy folders)"
        )
    elif kind == "glob":
        recs = recordings_from_glob(given[kind])
        empty = f"{where}: the pattern matches no file"
    else:
        recs = recordings_from_sample_sheet(given[kind])
        empty = f"{where}: the sample sheet lists no recording"
    if not recs:
        raise InputError(empty)
    defaults = read_options_from_config(inputs.get("read_options"))
    if defaults:
        recs = [
            replace(
                r,
                read_options=tuple(
                    sorted({**defaults.get(r.format, {}), **dict(r.read_options)}.items())
                ),
            )
            for r in recs
        ]
    return check_recordings(recs, source=where)


def resolve_fs_Hz(
    sheet_fs_Hz: float | None, metadata: Mapping[str, Any] | None, default_fs_Hz: float | None
) -> tuple[float | None, str]:
    """The sampling rate (Hz) of one recording and where it came from.

    Precedence: the sample sheet's ``fs_Hz``, then the recording's ``metadata["fs_Hz"]``,
    then the config default. Returns ``(None, "none")`` when none of them gives one. An
    unusable metadata value (not a positive number) is skipped with a warning.
    """
    if sheet_fs_Hz is not None:
        return float(sheet_fs_Hz), "sample sheet"
    value = (metadata or {}).get("fs_Hz")
    if value is not None:
        try:
            fs = float(value)
        except (TypeError, ValueError):
            fs = math.nan
        if math.isfinite(fs) and fs > 0:
            return fs, "metadata"
        _log.warning("metadata fs_Hz=%r is not a sampling rate (Hz); ignored", value)
    if default_fs_Hz is not None:
        return float(default_fs_Hz), "config fs_Hz"
    return None, "none"
