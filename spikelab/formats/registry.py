"""The format registry: one entry per file format, answering everything the rest of the code
asks of a format.

An entry is an instance of a :class:`Format` subclass, named ``FORMAT`` in the format's own
module (``spikelab/formats/<name>.py`` or a package of that name). It says

- its name (the key of its config block, of ``formats:`` and its folder under ``results/``),
  its file extension, or that each output is a folder;
- its writer and reader (functions with SpikeLab's signatures);
- which config keys it takes, with their checks, and the writer's and reader's keywords;
- the time unit in the file, hence how exactly a re-read spike time must match its source;
- whether it uses or needs a sampling rate, and which sample-sheet columns it takes;
- a memory and runtime model of one batch job.

The workflow, verification, summary, report and resource functions ask the registry; no code
outside a format's module tests which format it has. To add a format: write its module with
a writer, a reader and ``FORMAT``, and add one line to :data:`MODULES`.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

__all__ = [
    "MODULES",
    "ResourceModel",
    "Format",
    "get_format",
    "format_names",
    "input_format_for",
    "DEFAULT_INPUT_FORMAT",
    "all_formats",
    "tolerance_for_unit",
    "pick",
]

#: Format name -> module holding its ``FORMAT`` entry, in the order outputs are listed.
MODULES: dict[str, str] = {
    "hdf5": "spikelab.formats.hdf5",
    "nwb": "spikelab.formats.nwb",
    "kilosort": "spikelab.formats.kilosort",
    "pickle": "spikelab.formats.pickle_io",
}

#: The format of an input whose suffix says nothing (SpikeLab's own files are pickles).
DEFAULT_INPUT_FORMAT = "pickle"


@dataclass(frozen=True)
class ResourceModel:
    """Memory (MB) and wall time (min) a batch job asks a scheduler for.

    ``base_mem_mb`` covers the interpreter and the libraries the job imports; a recording in
    memory takes about its pickle size and the job holds a few copies of its spike times,
    hence ``mem_per_input`` MB per MB of the largest input. ``runtime_factor`` scales a generous
    wall-time estimate (a limit for cluster schedulers, not a prediction).
    """

    base_mem_mb: int = 400
    mem_per_input: float = 6.0
    runtime_factor: float = 1.0

    def mem_mb(self, sizes_mb: Sequence[float], attempt: int = 1) -> int:
        """Memory (MB) for a job reading files of ``sizes_mb`` (MB), one at a time (the
        largest counts); doubled on each retry."""
        largest = max(sizes_mb, default=0.0)
        mem = (self.base_mem_mb + self.mem_per_input * largest) * 2 ** (attempt - 1)
        return int(math.ceil(mem))

    def runtime_min(self, sizes_mb: Sequence[float], attempt: int = 1) -> int:
        """Wall time (minutes) for a job reading files of ``sizes_mb`` (MB)."""
        seconds = (60 + 2 * len(sizes_mb) + 2.0 * sum(sizes_mb)) * self.runtime_factor
        return int(math.ceil(seconds / 60 * attempt))


def tolerance_for_unit(unit: str, fs_Hz: float | None) -> tuple[float, int]:
    """How far a spike time read back from a file in ``unit`` may lie from its source:
    ``(absolute ms, ulps)``; a time passes when ``|read - source| <= absolute + ulps *
    spacing(|source|)``. Exact for ms, one ulp (plus one for the round trip) for s, half a
    sample (plus rounding) for samples; unknown for samples without a rate."""
    if unit == "ms":
        return 0.0, 0
    if unit == "s":
        return 0.0, 2
    if unit == "samples":
        return (math.inf, 0) if fs_Hz is None else (500.0 / fs_Hz, 4)
    raise ValueError(f"no tolerance for time unit {unit!r}")


def pick(block: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """The entries of ``block`` whose keys are in ``keys`` (those present only)."""
    return {k: block[k] for k in keys if k in block}


class Format:
    """What the rest of the code may ask of one file format (subclass per format).

    ``options`` below are one output's options from the config (only the keys it uses);
    ``fs_Hz`` is the recording's sampling rate (Hz) or None.
    """

    #: Name: config block, entry of ``formats:``, folder under ``results/``.
    name: ClassVar[str]
    #: One line for listings and the README.
    description: ClassVar[str] = ""
    #: Extension of an output file (``.nwb``); ``""`` when each output is a folder.
    extension: ClassVar[str] = ""
    #: True when each output is a folder.
    is_dir: ClassVar[bool] = False
    #: Config keys of the format's block that are writer keywords.
    option_keys: ClassVar[tuple[str, ...]] = ()
    #: Config keys (of :attr:`option_keys`) that the reader takes too.
    reader_keys: ClassVar[tuple[str, ...]] = ()
    #: Sample-sheet columns that become writer keywords for that recording.
    sheet_columns: ClassVar[tuple[str, ...]] = ()
    #: An example config block, shown when ``formats:`` lists the format but it defines none.
    config_example: ClassVar[str] = ""
    #: What one batch job asks a scheduler for.
    resources: ClassVar[ResourceModel] = ResourceModel()
    #: Suffixes (lower case) of input files of this format, for discovery; a folder format
    #: recognises its inputs with :meth:`is_input_folder` instead.
    input_suffixes: ClassVar[tuple[str, ...]] = ()
    #: Reader keywords that describe an input of this format (dataset names, file names,
    #: units): config ``inputs.read_options.<name>`` and sample-sheet columns of that name.
    input_keys: ClassVar[tuple[str, ...]] = ()
    #: True when reading an input of this format may take a sampling rate (times in samples).
    input_uses_fs: ClassVar[bool] = False

    # --------------------------------------------------------------- writer and reader
    def writer(self) -> Callable[..., Any]:
        """The export function: ``writer(sd, path, **writer_kwargs)``."""
        raise NotImplementedError

    def reader(self) -> Callable[..., Any]:
        """The load function: ``reader(path, **reader_kwargs) -> SpikeData`` (times in ms)."""
        raise NotImplementedError

    # ------------------------------------------------------------------- config
    def outputs_from_config(self, block: Mapping[str, Any] | None) -> list[tuple[str, dict]]:
        """``(target name, options)`` of every output the format's config ``block`` defines
        (one by default; raise :class:`~spikelab.formats.errors.OptionError` on bad options)."""
        options = pick(block or {}, self.option_keys)
        self.check_options(options)
        return [(self.name, options)]

    def check_options(self, options: Mapping[str, Any]) -> None:
        """Raise OptionError naming the config key when ``options`` cannot work together."""

    def option_warnings(self, block: Mapping[str, Any]) -> list[str]:
        """Warnings, one line each naming the config key, about the format's config
        ``block`` as the user wrote it (before the schema's defaults are filled in): keys that
        are valid but have no effect. None by default."""
        return []

    # --------------------------------------------------------------- time and rate
    def time_unit(self, options: Mapping[str, Any]) -> str:
        """Unit of the spike times in the file: ``ms``, ``s``, ``samples`` or ``bins``."""
        return "ms"

    def uses_fs(self, options: Mapping[str, Any]) -> bool:
        """True when the writer takes the recording's sampling rate (``fs_Hz``)."""
        return False

    def needs_fs(self, options: Mapping[str, Any]) -> bool:
        """True when the export fails without a sampling rate."""
        return False

    def time_tolerance(self, options: Mapping[str, Any], fs_Hz: float | None) -> tuple[float, int]:
        """``(absolute ms, ulps)`` a re-read spike time may differ by; see
        :func:`tolerance_for_unit`."""
        return tolerance_for_unit(self.time_unit(options), fs_Hz)

    # --------------------------------------------------------------- keywords
    def writer_kwargs(
        self, options: Mapping[str, Any], recording: str, fs_Hz: float | None
    ) -> dict[str, Any]:
        """Keyword arguments of the writer (after ``sd, path``) for ``recording``."""
        kwargs = dict(options)
        if self.uses_fs(options):
            kwargs["fs_Hz"] = fs_Hz
        return kwargs

    def reader_kwargs(
        self,
        options: Mapping[str, Any],
        fs_Hz: float | None,
        *,
        pickle_loading: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Keyword arguments of the reader (after the path) for a file written with
        ``options``; ``pickle_loading`` holds the pickle loader's opt-ins (``trusted``,
        ``allow_globals``), used by formats that unpickle."""
        return pick(options, self.reader_keys)

    def own_output_kwargs(self, written: Any) -> dict[str, Any]:
        """Extra keyword arguments of the reader for reading back an output that this process
        has just written itself (``written``: the identity its writer recorded, a
        :class:`~spikelab.formats.atomic.WrittenFile`); for readers that check untrusted
        files more than their own outputs need. None by default."""
        return {}

    # --------------------------------------------------------------- as an input
    def is_input_folder(self, path: str) -> bool:
        """True when the folder ``path`` holds an input of this (folder) format."""
        return False

    def input_files(self, path: str) -> list[str]:
        """The files of input ``path`` whose changes should re-run its conversions (the path
        itself for a file; the files the reader reads for a folder)."""
        return [path]

    def input_reader(self, path: str, read_options: Mapping[str, Any]) -> Format:
        """The format that reads ``path`` (this one, unless its content says otherwise)."""
        return self

    def input_kwargs(
        self,
        path: str,
        read_options: Mapping[str, Any],
        fs_Hz: float | None,
        default_fs_Hz: float | None,
        *,
        pickle_loading: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Keyword arguments of the reader for input ``path``: the user's ``read_options``
        (keys of :attr:`input_keys`), the sample sheet's ``fs_Hz`` and, where the file
        itself gives no rate, the config's ``default_fs_Hz`` (Hz)."""
        return pick(read_options, self.input_keys)

    def same_as_input(self, path: str, options: Mapping[str, Any]) -> bool:
        """True when writing input ``path`` (already of this format) with ``options`` would
        give the same file: the output is then a link to the input, not a re-write."""
        return False

    # --------------------------------------------------------------- warm-up
    def warm_up(self, options: Mapping[str, Any]) -> None:
        """Import what the writer and reader load lazily (h5py, pynwb...) by writing a
        one-spike recording with ``options`` to a temporary folder and reading it back.

        Batch jobs call this before forking a worker after the first, so that fresh workers do
        not pay the imports. Any failure is ignored: the real recordings will report it.
        """
        import tempfile
        import warnings

        from spikelab.spikedata.spikedata import SpikeData

        sd = SpikeData([[1.0]], length=2.0, metadata={"fs_Hz": 1000.0})
        with tempfile.TemporaryDirectory(prefix="spikelab-warm-up-") as tmp:
            path = f"{tmp}/warm_up{self.extension}"
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    self.writer()(sd, path, **self.writer_kwargs(options, "warm_up", 1000.0))
                    self.reader()(path, **self.reader_kwargs(options, 1000.0))
            except Exception:  # noqa: BLE001 - a warm-up only
                pass

    def __repr__(self) -> str:
        return f"<Format {self.name}>"


def get_format(name: str) -> Format:
    """The registry entry of format ``name`` (its module is imported on first use)."""
    try:
        module = MODULES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown format {name!r}; known formats: {', '.join(MODULES)}") from None
    loaded = _LOADED.get(module)
    if loaded is None:
        loaded = _LOADED[module] = importlib.import_module(module).FORMAT
    return loaded


#: Entries already imported, by module (the workflow asks ~30 times per recording at start).
_LOADED: dict[str, Format] = {}


def format_names() -> tuple[str, ...]:
    """Every registered format name, in registry order."""
    return tuple(MODULES)


def input_format_for(path: str, *, is_dir: bool) -> Format | None:
    """The format of input ``path`` from its suffix (a file) or its content (a folder), or
    None when no format reads it."""
    for fmt in all_formats():
        if is_dir:
            if fmt.is_dir and fmt.is_input_folder(path):
                return fmt
        elif path.lower().endswith(fmt.input_suffixes) and fmt.input_suffixes:
            return fmt
    return None


def all_formats() -> list[Format]:
    """Every registered format, in registry order."""
    return [get_format(name) for name in MODULES]
