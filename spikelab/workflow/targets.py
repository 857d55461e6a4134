"""Output targets: one per output the config defines (one per format, one per named entry of
the ``hdf5`` block). A :class:`Target` pairs a name and options with its format's registry
entry, which answers every format question (paths, keywords, time unit, tolerance).

Output layout (``results`` is :data:`RESULTS`)::

    results/hdf5/<entry>/<recording>.h5     one folder per entry of the hdf5 block
    results/nwb/<recording>.nwb
    results/kilosort/<recording>/            a KiloSort/Phy folder
    results/pickle/<recording>.pkl
    results/verify/<target>/<batch>.json     verification of one batch
    results/summary.tsv                      every recording x target
    results/verified.ok                      written by the check when every output verified
    results/report/<recording>.png           overview figure
    results/report/stats/<batch>.json        numbers of one batch's recordings
    results/report/recordings.tsv, .html     the report's table

The rules declare their outputs with these functions, and :func:`declared_outputs` lists every
path they declare from the same functions, so the listing of stale outputs
(:mod:`spikelab.workflow.stale`) cannot drift from the rules.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from spikelab.formats.errors import MissingSamplingRateError, OptionError
from spikelab.formats.registry import Format, all_formats, format_names, get_format
from spikelab.workflow import WorkflowConfigError

__all__ = [
    "RESULTS",
    "SUMMARY",
    "VERIFIED",
    "REPORT",
    "REPORT_TABLE",
    "report_figure",
    "report_stats",
    "sources_list",
    "export_log",
    "declared_outputs",
    "Target",
    "MissingSamplingRateError",
    "targets_from_config",
    "selected_targets",
    "sampling_rate_fix",
]

RESULTS = "results"
SUMMARY = f"{RESULTS}/summary.tsv"
VERIFIED = f"{RESULTS}/verified.ok"
REPORT = f"{RESULTS}/report"
REPORT_TABLE = (f"{REPORT}/recordings.tsv", f"{REPORT}/recordings.html")


def report_figure(recording: str) -> str:
    """Path of the overview figure of ``recording``."""
    return f"{REPORT}/{recording}.png"


def report_stats(batch_key: str) -> str:
    """Path of the JSON numbers (units, spikes, duration, ...) of one batch's recordings."""
    return f"{REPORT}/stats/{batch_key}.json"


def sources_list(batch_key: str) -> str:
    """Path of the list of one batch's input files (every job of the batch depends on it)."""
    return f"{RESULTS}/sources/{batch_key}.tsv"


def export_log(target_name: str, batch_key: str) -> str:
    """Log of the export job of one target and batch."""
    return f"logs/export/{target_name}/{batch_key}.log"


@dataclass(frozen=True)
class Target:
    """One kind of output file.

    Attributes
    ----------
    name : str
        ``"nwb"``, ``"kilosort"``, ``"pickle"`` or ``"hdf5/<entry>"``; also the output folder
        under ``results/``.
    format : str
        A registered format name (:func:`spikelab.formats.format_names`).
    options : dict
        The writer's keyword arguments from the config (only those this target uses).
    """

    name: str
    format: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def spec(self) -> Format:
        """The format's registry entry."""
        return get_format(self.format)

    # ------------------------------------------------------------------ naming and paths
    @property
    def rule_name(self) -> str:
        """Identifier form of the name (``hdf5/ragged`` -> ``hdf5_ragged``)."""
        return self.name.replace("/", "_")

    @property
    def is_dir(self) -> bool:
        """True when each output is a folder (KiloSort/Phy)."""
        return self.spec.is_dir

    def output(self, recording: str) -> str:
        """Output path of ``recording`` (a folder for a folder format)."""
        return f"{RESULTS}/{self.name}/{recording}{self.spec.extension}"

    def verify_output(self, batch_key: str) -> str:
        """Path of the JSON verification result of one batch (written by its export job)."""
        return f"{RESULTS}/verify/{self.name}/{batch_key}.json"

    def export_log(self, batch_key: str) -> str:
        """Log of the export (and verify) job of one batch."""
        return export_log(self.name, batch_key)

    def as_params(self) -> dict[str, Any]:
        """A plain dict (name, format, sorted options) for Snakemake ``params:``."""
        return {
            "name": self.name,
            "format": self.format,
            "options": dict(sorted(self.options.items())),
        }

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Target:
        return cls(params["name"], params["format"], dict(params["options"]))

    # ---------------------------------------------------------------- format questions
    @property
    def time_unit(self) -> str:
        """Unit of the spike times in the file: ms, s, samples or bins (raster)."""
        return self.spec.time_unit(self.options)

    @property
    def uses_fs(self) -> bool:
        """True when the writer takes the recording's sampling rate (fs_Hz)."""
        return self.spec.uses_fs(self.options)

    @property
    def needs_fs(self) -> bool:
        """True when the export fails without a sampling rate."""
        return self.spec.needs_fs(self.options)

    @property
    def sheet_columns(self) -> tuple[str, ...]:
        """Sample-sheet columns that become writer keywords of this target."""
        return self.spec.sheet_columns

    def exporter_kwargs(
        self, recording: str, fs_Hz: float | None, *, sample_sheet: bool = False
    ) -> dict[str, Any]:
        """Keyword arguments for the format's writer (after ``sd, path``). ``sample_sheet``
        says whether the recordings come from a sample sheet (where a rate may be given), for
        the message of a missing rate."""
        if fs_Hz is None and self.needs_fs:
            sheet = "the sample sheet has no fs_Hz for it, " if sample_sheet else ""
            raise MissingSamplingRateError(
                f"recording {recording!r}: the {self.name} export needs a sampling rate, and "
                f"none is known: {sheet}its metadata has no usable 'fs_Hz' (a number > 0), "
                f"and the config's fs_Hz is null. {sampling_rate_fix(sample_sheet)}."
            )
        return self.spec.writer_kwargs(self.options, recording, fs_Hz)

    def loader_kwargs(
        self, fs_Hz: float | None, *, pickle_loading: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Keyword arguments for the format's reader (after the path)."""
        return self.spec.reader_kwargs(self.options, fs_Hz, pickle_loading=pickle_loading)

    def time_tolerance(self, fs_Hz: float | None) -> tuple[float, int]:
        """How far a re-read spike time may lie from its source: ``(absolute ms, ulps)``.

        A time passes when ``|read - source| <= absolute + ulps * spacing(|source|)``:
        exact for ms, one ulp (plus one for the round trip) for s, half a sample for
        samples, one bin for a raster.
        """
        return self.spec.time_tolerance(self.options, fs_Hz)


def sampling_rate_fix(sample_sheet: bool) -> str:
    """What to do when a recording has no sampling rate: where a rate can be given."""
    if sample_sheet:
        return (
            "Set fs_Hz in config.yaml (for every recording without one), or the recording's "
            "fs_Hz in the sample sheet"
        )
    return "Set fs_Hz in config.yaml (for every recording without one in its metadata)"


def _check_finite(key: str, value: Any, what: str) -> None:
    """The schema's number bounds let NaN and infinity through (``.nan``, ``--config x=nan``)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise WorkflowConfigError(f"config key {key}: {value!r} is not {what}")


def targets_from_config(config: Mapping[str, Any]) -> list[Target]:
    """Every target the (schema-validated) config defines, whether selected or not, in
    registry order."""
    _check_finite("fs_Hz", config.get("fs_Hz"), "a sampling rate in Hz (e.g. 20000)")
    isolation = config.get("isolation") or {}
    _check_finite("isolation.memory_mb", isolation.get("memory_mb"), "a size in MB")
    _check_finite("isolation.seconds", isolation.get("seconds"), "a time in s")
    targets: list[Target] = []
    for spec in all_formats():
        if spec.name not in config:
            continue
        try:
            outputs = spec.outputs_from_config(config[spec.name])
        except OptionError as exc:
            raise WorkflowConfigError(str(exc)) from None
        targets += [Target(name, spec.name, options) for name, options in outputs]
    return targets


def selected_targets(config: Mapping[str, Any], targets: list[Target]) -> list[Target]:
    """The targets of the formats listed in ``config["formats"]`` (built by default)."""
    formats = list(config.get("formats") or [])
    for name in formats:
        if name in format_names() and not any(t.format == name for t in targets):
            raise WorkflowConfigError(
                f"config key formats lists {name}, but the {name} block defines no entry; add "
                f"one (e.g. {get_format(name).config_example}) or remove {name} from formats"
            )
    return [t for t in targets if t.format in formats]


def declared_outputs(
    recordings: Iterable[str], batch_keys: Iterable[str], targets: Iterable[Target]
) -> set[str]:
    """Every path under :data:`RESULTS` that a rule declares, for the recordings named
    ``recordings`` in batches ``batch_keys`` and every defined target (selected or not):
    each target's output of each recording and verify result of each batch, each batch's list
    of sources, the report's figures, numbers and table, the summary and the check's stamp."""
    recordings, batch_keys = list(recordings), list(batch_keys)
    paths = {SUMMARY, VERIFIED, *REPORT_TABLE}
    paths.update(report_figure(name) for name in recordings)
    paths.update(report_stats(key) for key in batch_keys)
    paths.update(sources_list(key) for key in batch_keys)
    for target in targets:
        paths.update(target.output(name) for name in recordings)
        paths.update(target.verify_output(key) for key in batch_keys)
    return paths
