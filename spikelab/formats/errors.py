"""The errors every format raises: bad export arguments, an output path taken by something else,
an unreadable file, a missing sampling rate."""

from __future__ import annotations

__all__ = [
    "ExportError",
    "OutputInTheWayError",
    "LoadError",
    "FailureRecordError",
    "MissingSamplingRateError",
    "OptionError",
    "spikedata_or_load_error",
]


class ExportError(ValueError):
    """An export was asked with arguments that cannot work (raised before any file is opened)."""


class OutputInTheWayError(ExportError):
    """Something else (a folder where a file goes, or a file where a folder goes) occupies the
    output path; it is left alone. Not a fault of the data: remove it and export again."""


class LoadError(ValueError):
    """A file could not be read back as SpikeData; the message names the file and the fault."""


class FailureRecordError(LoadError):
    """The path holds the workflow's failure record of an export, not data (see
    :mod:`spikelab.formats.failure_record`)."""


class MissingSamplingRateError(ValueError):
    """An export needs a sampling rate (Hz) and the recording has none."""


class OptionError(ValueError):
    """A format's options in the workflow config cannot work; the message names the config key."""


def spikedata_or_load_error(where: str, train, **kwargs):
    """``SpikeData(train, **kwargs)``; a constructor rejection becomes a LoadError naming
    ``where`` (the file or folder read, and what was read of it)."""
    from spikelab.spikedata.spikedata import InvalidSpikeDataError, SpikeData

    try:
        return SpikeData(train, **kwargs)
    except InvalidSpikeDataError as exc:
        raise LoadError(f"{where}: {exc}") from None
