"""Checks of the NWB exporter's keywords (session, subject, sampling rate), before any file is
opened; the sample sheet and the config pass the same keywords."""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Sequence
from typing import Any

from spikelab.formats.errors import ExportError
from spikelab.formats.time_units import check_fs

__all__ = [
    "DEFAULT_SESSION_DESCRIPTION",
    "PLACEHOLDER_SESSION_START_TIME",
    "PLACEHOLDER_NOTE",
    "METADATA_SESSION_START_KEYS",
    "SessionStartUnknownWarning",
    "COMPRESSIONS",
    "resolve_fs",
    "nwb_options",
]

DEFAULT_SESSION_DESCRIPTION = "Spike trains exported from SpikeLab"
#: The metadata keys read for the session start, in order. SpikeLab 0.1.2's loaders set no date
#: key at all; ``session_start_time`` is what our NWB loader sets for files of other writers and
#: what users set by hand. Other names (``start_datetime``, ``recording_start``) are not written
#: by any loader we know: reading them would be guessing.
METADATA_SESSION_START_KEYS = ("session_start_time",)
#: Written when no session start is known (keyword, then metadata): a fixed placeholder, so the
#: same recording and options give the same file. It is after nwbinspector's 1980-01-01 in any
#: time zone and not in the future; the file's ``notes`` and a SessionStartUnknownWarning say
#: that it is a placeholder.
PLACEHOLDER_SESSION_START_TIME = _dt.datetime(2000, 1, 1, tzinfo=_dt.UTC)
#: The NWBFile ``notes`` of a file with the placeholder (which also gets the file's name as
#: ``session_id``: dandi organize names a session without one by its start).
PLACEHOLDER_NOTE = (
    "session_start_time is a placeholder ({when}): the date and time of this recording were "
    "not known to SpikeLab's NWB exporter; do not read it as the date of the recording. "
    "session_id is the file's name ({name}), so that tools naming sessions by their start "
    "(dandi organize) do not use the placeholder."
)
COMPRESSIONS = (None, "gzip", "lzf")
# ISO 8601 duration (nwbinspector's pattern), optionally a range "P1D/P3D" or "P90D/".
_DURATION = (
    r"P(?!$)(\d+(?:\.\d+)?Y)?(\d+(?:\.\d+)?M)?(\d+(?:\.\d+)?W)?(\d+(?:\.\d+)?D)?"
    r"(T(?=\d)(\d+(?:\.\d+)?H)?(\d+(?:\.\d+)?M)?(\d+(?:\.\d+)?S)?)?"
)
_AGE = re.compile(rf"{_DURATION}|{_DURATION}/(?:{_DURATION})?|/{_DURATION}")


class SessionStartUnknownWarning(UserWarning):
    """No session start was given or found in the metadata: the NWB file holds a placeholder."""


def _opt_str(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ExportError(f"{name} must be a non-empty string or None, got {value!r}")
    return value


def _as_datetime(value: Any, source: str) -> _dt.datetime:
    """A timezone-aware datetime from a datetime or an ISO 8601 string."""
    if isinstance(value, str):
        try:
            value = _dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise ExportError(
                f"{source} must be an ISO 8601 date-time such as '2024-05-01T10:00:00+00:00', "
                f"got {value!r}"
            ) from None
    if not isinstance(value, _dt.datetime):
        raise ExportError(f"{source} must be a datetime or an ISO 8601 string, got {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ExportError(
            f"{source} ({value.isoformat()}) has no time zone; NWB needs one. Give an offset, "
            "e.g. '2024-05-01T10:00:00+00:00', or pass session_start_time= with one."
        )
    return value


def resolve_fs(sd, fs_Hz: Any) -> float | None:
    if fs_Hz is not None:
        return check_fs(fs_Hz)
    value = sd.metadata.get("fs_Hz")
    return None if value is None else check_fs(value, what='metadata["fs_Hz"]')


def _session_start(sd, keyword: Any) -> _dt.datetime | None:
    """The session start: the keyword, else the first metadata key of
    METADATA_SESSION_START_KEYS that holds one, else None (unknown)."""
    if keyword is not None:
        return _as_datetime(keyword, "session_start_time")
    for key in METADATA_SESSION_START_KEYS:
        if sd.metadata.get(key) is not None:
            return _as_datetime(sd.metadata[key], f'metadata["{key}"]')
    return None


def nwb_options(sd, kw: dict[str, Any]) -> dict[str, Any]:
    """Validate the NWBFile keywords; return what NWBFile and Subject are built from."""
    identifier = _opt_str("identifier", kw["identifier"])
    description = _opt_str("session_description", kw["session_description"])
    if description is None:
        meta_desc = sd.metadata.get("session_description")
        description = meta_desc if isinstance(meta_desc, str) and meta_desc.strip() else None
    start = _session_start(sd, kw["session_start_time"])
    experimenter = kw["experimenter"]
    if isinstance(experimenter, str):
        experimenter = [experimenter]
    if experimenter is not None:
        if not isinstance(experimenter, Sequence) or not all(
            isinstance(e, str) and e.strip() for e in experimenter
        ):
            raise ExportError(
                f"experimenter must be a name or a list of names, got {kw['experimenter']!r}"
            )
        experimenter = list(experimenter) or None
    meta_subject = sd.metadata.get("subject")
    if meta_subject is not None and not isinstance(meta_subject, dict):
        raise ExportError(f'metadata["subject"] must be a dict, got {type(meta_subject).__name__}')
    subject = {}
    for key in ("subject_id", "species", "sex", "age"):
        if kw[key] is not None:
            subject[key] = _opt_str(key, kw[key])
        elif meta_subject and meta_subject.get(key) is not None:
            subject[key] = _opt_str(f'metadata["subject"]["{key}"]', meta_subject[key])
    if "age" in subject and not _AGE.fullmatch(subject["age"]):
        raise ExportError(
            f"age must be an ISO 8601 duration such as 'P90D' (90 days) or a range 'P90D/P120D', "
            f"got {subject['age']!r}"
        )
    location = _opt_str("electrode_location", kw["electrode_location"]) or "unknown"
    return {
        "identifier": identifier,
        "session_description": description or DEFAULT_SESSION_DESCRIPTION,
        "session_start_time": PLACEHOLDER_SESSION_START_TIME if start is None else start,
        "session_start_known": start is not None,
        "lab": _opt_str("lab", kw["lab"]),
        "institution": _opt_str("institution", kw["institution"]),
        "experimenter": experimenter,
        "subject": subject or None,
        "electrode_location": location,
    }
