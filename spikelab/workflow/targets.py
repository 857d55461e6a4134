"""Output targets: one per format, and one per named entry of the ``hdf5`` config block.

A :class:`Target` knows its output paths, the exporter's keyword arguments (taken from the
validated config), the matching loader's keyword arguments, and how closely the re-read spike
times must match the source (see :meth:`Target.time_tolerance`).

Output layout (``results`` is :data:`RESULTS`)::

    results/hdf5/<entry>/<recording>.h5     one folder per entry of the hdf5 block
    results/nwb/<recording>.nwb
    results/kilosort/<recording>/            a KiloSort/Phy folder
    results/pickle/<recording>.pkl
    results/verify/<target>/<batch>.json     verification of one batch
    results/summary.tsv                      every recording x target
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from spikelab.workflow import WorkflowConfigError

__all__ = [
    "FORMATS",
    "RESULTS",
    "Target",
    "MissingSamplingRateError",
    "targets_from_config",
    "selected_targets",
]

FORMATS = ("hdf5", "nwb", "kilosort", "pickle")
RESULTS = "results"
_EXTENSIONS = {"hdf5": ".h5", "nwb": ".nwb", "kilosort": "", "pickle": ".pkl"}

# Exporter keywords that matter for each HDF5 style (the others are ignored by the exporter,
# and are left out of the job's params so that changing them re-runs nothing).
_HDF5_COMMON = ("style", "raw_dataset", "raw_time_dataset", "raw_time_unit")
_HDF5_STYLE_KEYS = {
    "ragged": ("spike_times_dataset", "spike_times_index_dataset", "spike_times_unit"),
    "raster": (
        "raster_dataset",
        "raster_bin_size_ms",
        "raster_dtype",
        "raster_compression",
        "raster_compression_opts",
    ),
    "group": ("group_per_unit", "group_time_unit"),
    "paired": ("idces_dataset", "times_dataset", "times_unit"),
}
_HDF5_UNIT_KEY = {  # style -> (keyword, the exporter's default unit)
    "ragged": ("spike_times_unit", "s"),
    "group": ("group_time_unit", "s"),
    "paired": ("times_unit", "ms"),
}
_HDF5_LOADER_KEYS = {
    "ragged": ("spike_times_dataset", "spike_times_index_dataset", "spike_times_unit"),
    "raster": ("raster_dataset", "raster_bin_size_ms"),
    "group": ("group_per_unit", "group_time_unit"),
    "paired": ("idces_dataset", "times_dataset", "times_unit"),
}
_NWB_KEYS = (
    "spike_times_dataset",
    "spike_times_index_dataset",
    "group",
    "identifier",
    "session_description",
    "session_start_time",
    "subject_id",
    "species",
    "sex",
    "age",
    "lab",
    "institution",
    "experimenter",
    "electrode_location",
    "compression",
)
_KILOSORT_KEYS = (
    "spike_times_file",
    "spike_clusters_file",
    "time_unit",
    "n_channels",
    "dtype",
    "dat_path",
)
_PICKLE_KEYS = ("protocol",)
_PICKLE_S3_KEYS = ("s3_prefix", "s3_endpoint_url", "s3_region_name")


class MissingSamplingRateError(ValueError):
    """A target needs a sampling rate (Hz) and the recording has none."""


@dataclass(frozen=True)
class Target:
    """One kind of output file.

    Attributes
    ----------
    name : str
        ``"nwb"``, ``"kilosort"``, ``"pickle"`` or ``"hdf5/<entry>"``; also the output folder
        under ``results/``.
    format : str
        One of :data:`FORMATS`.
    options : dict
        Exporter keyword arguments from the config (only those this target uses), plus, for
        pickle, the ``s3_*`` upload options.
    """

    name: str
    format: str
    options: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ naming and paths
    @property
    def rule_name(self) -> str:
        """Identifier form of the name (``hdf5/ragged`` -> ``hdf5_ragged``)."""
        return self.name.replace("/", "_")

    @property
    def is_dir(self) -> bool:
        """True when each output is a folder (KiloSort/Phy)."""
        return self.format == "kilosort"

    def output(self, recording: str) -> str:
        """Output path of ``recording`` (a folder for kilosort)."""
        return f"{RESULTS}/{self.name}/{recording}{_EXTENSIONS[self.format]}"

    def verify_output(self, batch_key: str) -> str:
        """Path of the JSON verification result of one batch."""
        return f"{RESULTS}/verify/{self.name}/{batch_key}.json"

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

    # ---------------------------------------------------------------- sampling rate use
    @property
    def time_unit(self) -> str:
        """Unit of the spike times in the file: ms, s, samples or bins (raster)."""
        if self.format == "hdf5":
            style = self.options["style"]
            if style == "raster":
                return "bins"
            key, default = _HDF5_UNIT_KEY[style]
            return self.options.get(key) or default
        if self.format == "kilosort":
            return self.options.get("time_unit", "samples")
        if self.format == "nwb":
            return "s"
        return "ms"

    @property
    def uses_fs(self) -> bool:
        """True when the exporter takes the recording's sampling rate (fs_Hz)."""
        if self.format in ("nwb", "kilosort"):
            return True
        if self.format == "hdf5":
            o = self.options
            return self.time_unit in ("samples", "bins") or (
                o.get("raw_dataset") is not None
                and o.get("raw_time_dataset") is not None
                and o.get("raw_time_unit") == "samples"
            )
        return False

    @property
    def needs_fs(self) -> bool:
        """True when the export fails without a sampling rate."""
        if self.format == "kilosort":
            return True
        return self.format == "hdf5" and (
            self.time_unit == "samples"
            or (
                self.options.get("raw_dataset") is not None
                and self.options.get("raw_time_dataset") is not None
                and self.options.get("raw_time_unit") == "samples"
            )
        )

    def _check_fs(self, recording: str, fs_Hz: float | None) -> None:
        if fs_Hz is None and self.needs_fs:
            raise MissingSamplingRateError(
                f"recording {recording!r}: the {self.name} export needs a sampling rate, and "
                "none is known: the sample sheet has no fs_Hz for it, its metadata has no "
                "usable 'fs_Hz' (a number > 0), and the config's fs_Hz is null. Set fs_Hz in "
                "config.yaml or add an fs_Hz column to the sample sheet."
            )

    # ------------------------------------------------------------ exporter and loader
    def exporter_kwargs(self, recording: str, fs_Hz: float | None) -> dict[str, Any]:
        """Keyword arguments for this format's exporter (after ``sd, path``)."""
        self._check_fs(recording, fs_Hz)
        if self.format == "pickle":
            return {k: self.options[k] for k in _PICKLE_KEYS if k in self.options}
        kwargs = dict(self.options)
        if self.format == "nwb":
            kwargs = {
                k: v.replace("{recording}", recording) if isinstance(v, str) else v
                for k, v in kwargs.items()
            }
        if self.uses_fs:
            kwargs["fs_Hz"] = fs_Hz
        return kwargs

    def loader_kwargs(self, fs_Hz: float | None) -> dict[str, Any]:
        """Keyword arguments for the matching loader (after the path)."""
        o = self.options
        if self.format == "hdf5":
            kwargs = {k: o[k] for k in _HDF5_LOADER_KEYS[o["style"]] if k in o}
            if self.time_unit == "samples":
                kwargs["fs_Hz"] = fs_Hz
            return kwargs
        if self.format == "kilosort":
            kwargs = {
                k: o[k] for k in ("spike_times_file", "spike_clusters_file", "time_unit") if k in o
            }
            kwargs["fs_Hz"] = fs_Hz
            return kwargs
        if self.format == "nwb":
            kwargs = {
                k: o[k]
                for k in ("spike_times_dataset", "spike_times_index_dataset", "group")
                if k in o
            }
            kwargs["prefer_pynwb"] = True
            return kwargs
        return {}

    def time_tolerance(self, fs_Hz: float | None) -> tuple[float, int]:
        """How far a re-read spike time may lie from its source: ``(absolute ms, ulps)``.

        A time passes when ``|read - source| <= absolute + ulps * spacing(|source|)``:
        exact for ms, one ulp (plus one for the round trip) for s, half a sample for
        samples, one bin for a raster.
        """
        unit = self.time_unit
        if unit == "ms":
            return 0.0, 0
        if unit == "s":
            return 0.0, 2
        if unit == "samples":
            if fs_Hz is None:
                return math.inf, 0
            return 500.0 / fs_Hz, 4
        return float(self.options["raster_bin_size_ms"]), 4  # bins


def _pick(block: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: block[k] for k in keys if k in block}


def _check_finite(key: str, value: Any, what: str) -> None:
    """The schema's number bounds let NaN and infinity through (``.nan``, ``--config x=nan``)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise WorkflowConfigError(f"config key {key}: {value!r} is not {what}")


def targets_from_config(config: Mapping[str, Any]) -> list[Target]:
    """Every target the (schema-validated) config defines, whether selected or not."""
    targets: list[Target] = []
    _check_finite("fs_Hz", config.get("fs_Hz"), "a sampling rate in Hz (e.g. 20000)")
    hdf5 = config.get("hdf5") or {}
    for entry, block in hdf5.items():
        style = block["style"]
        if style == "raster" and block.get("raster_bin_size_ms") is None:
            raise WorkflowConfigError(
                f"config key hdf5.{entry}.raster_bin_size_ms: style 'raster' needs a bin width "
                "in ms (e.g. 1.0)"
            )
        _check_finite(
            f"hdf5.{entry}.raster_bin_size_ms", block.get("raster_bin_size_ms"), "a width in ms"
        )
        if block.get("raw_time_dataset") is not None and block.get("raw_dataset") is None:
            raise WorkflowConfigError(
                f"config key hdf5.{entry}.raw_time_dataset: needs hdf5.{entry}.raw_dataset too"
            )
        keys = _HDF5_COMMON + _HDF5_STYLE_KEYS[style]
        targets.append(Target(f"hdf5/{entry}", "hdf5", _pick(block, keys)))
    if "nwb" in config:
        targets.append(Target("nwb", "nwb", _pick(config["nwb"], _NWB_KEYS)))
    if "kilosort" in config:
        ks = config["kilosort"]
        files = (ks.get("spike_times_file"), ks.get("spike_clusters_file"))
        if files[0] is not None and files[0] == files[1]:
            raise WorkflowConfigError(
                "config keys kilosort.spike_times_file and kilosort.spike_clusters_file must differ"
            )
        targets.append(Target("kilosort", "kilosort", _pick(ks, _KILOSORT_KEYS)))
    if "pickle" in config:
        pk = config["pickle"]
        options = _pick(pk, _PICKLE_KEYS)
        if pk.get("s3_prefix"):
            options.update(_pick(pk, _PICKLE_S3_KEYS))
        targets.append(Target("pickle", "pickle", options))
    return targets


def selected_targets(config: Mapping[str, Any], targets: list[Target]) -> list[Target]:
    """The targets of the formats listed in ``config["formats"]`` (built by default)."""
    formats = list(config.get("formats") or [])
    if "hdf5" in formats and not any(t.format == "hdf5" for t in targets):
        raise WorkflowConfigError(
            "config key formats lists hdf5, but the hdf5 block defines no entry; add one "
            "(e.g. hdf5: {ragged: {style: ragged}}) or remove hdf5 from formats"
        )
    return [t for t in targets if t.format in formats]
