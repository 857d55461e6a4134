"""HDF5 export and import of SpikeData in four layouts (styles).

``ragged``  flat ``spike_times`` (all units, unit-major) + ``spike_times_index`` holding the
            cumulative end of each unit (NWB's VectorIndex convention), times in
            ``spike_times_unit``.
``raster``  ``(N, T)`` spike counts per ``raster_bin_size_ms`` bin from ``start_time``; written
            in row blocks from the sparse spike times (the dense matrix is never built),
            chunked and compressed, with the narrowest unsigned count dtype that fits.
``group``   a group ``group_per_unit`` with one dataset per unit, named by the unit index
            (``"0"``, ``"1"``, ... ; loaders sort them numerically), times in ``group_time_unit``.
``paired``  parallel ``idces`` (unit index) and ``times`` (in ``times_unit``), unit-major.

A recording of length 0 without spikes gives a raster of ``(N, 0)``.

Every file carries the attributes ``start_time`` (ms), ``length_ms``, ``N``,
``spikelab_style`` and, as JSON strings, ``metadata_json`` and ``neuron_attributes_json``;
every time dataset carries ``unit`` (and ``fs_Hz`` for samples).
"""

import math
from collections.abc import Mapping

from spikelab.formats.errors import OptionError
from spikelab.formats.hdf5.layout import HDF5_STYLES, RASTER_MAX_CELLS
from spikelab.formats.hdf5.read import load_spikedata_from_hdf5
from spikelab.formats.hdf5.write import export_spikedata_to_hdf5
from spikelab.formats.registry import Format, ResourceModel, pick

__all__ = [
    "export_spikedata_to_hdf5",
    "load_spikedata_from_hdf5",
    "HDF5_STYLES",
    "RASTER_MAX_CELLS",
    "STYLE_KEYS",
    "FORMAT",
]


# --------------------------------------------------------------------------- registry entry

#: The style of an entry that names none (the schema's default).
DEFAULT_STYLE = "ragged"
#: Writer keywords every style uses.
COMMON_KEYS = ("style", "raw_dataset", "raw_time_dataset", "raw_time_unit")
#: Writer keywords of each style (the writer ignores the other styles' keywords, so they are
#: left out of a job's options: changing them re-runs nothing).
STYLE_KEYS = {
    "ragged": ("spike_times_dataset", "spike_times_index_dataset", "spike_times_unit"),
    "raster": (
        "raster_dataset",
        "raster_bin_size_ms",
        "raster_dtype",
        "raster_compression",
        "raster_compression_opts",
        "raster_max_cells",
    ),
    "group": ("group_per_unit", "group_time_unit"),
    "paired": ("idces_dataset", "times_dataset", "times_unit"),
}
#: Reader keywords of each style.
READER_KEYS = {
    "ragged": ("spike_times_dataset", "spike_times_index_dataset", "spike_times_unit"),
    "raster": ("raster_dataset", "raster_bin_size_ms"),
    "group": ("group_per_unit", "group_time_unit"),
    "paired": ("idces_dataset", "times_dataset", "times_unit"),
}
#: The keyword holding each style's time unit, and the writer's default for it.
UNIT_KEY = {
    "ragged": ("spike_times_unit", "s"),
    "group": ("group_time_unit", "s"),
    "paired": ("times_unit", "ms"),
}


class HDF5Format(Format):
    """HDF5 in four styles; the config block holds named entries, one output each
    (``results/hdf5/<entry>/<recording>.h5``)."""

    name = "hdf5"
    description = "HDF5 file in one of four layouts (ragged, raster, group, paired)"
    extension = ".h5"
    option_keys = COMMON_KEYS + tuple(k for keys in STYLE_KEYS.values() for k in keys)
    config_example = "hdf5: {ragged: {style: ragged}}"
    resources = ResourceModel(base_mem_mb=350)

    def writer(self):
        return export_spikedata_to_hdf5

    def reader(self):
        return load_spikedata_from_hdf5

    def outputs_from_config(self, block):
        outputs = []
        for entry, entry_block in (block or {}).items():
            style = entry_block["style"]
            if style == "raster" and entry_block.get("raster_bin_size_ms") is None:
                raise OptionError(
                    f"config key hdf5.{entry}.raster_bin_size_ms: style 'raster' needs a bin "
                    "width in ms (e.g. 1.0)"
                )
            bin_ms = entry_block.get("raster_bin_size_ms")
            if isinstance(bin_ms, float) and not math.isfinite(bin_ms):
                raise OptionError(
                    f"config key hdf5.{entry}.raster_bin_size_ms: {bin_ms!r} is not a width in ms"
                )
            if (
                entry_block.get("raw_time_dataset") is not None
                and entry_block.get("raw_dataset") is None
            ):
                raise OptionError(
                    f"config key hdf5.{entry}.raw_time_dataset: needs hdf5.{entry}.raw_dataset too"
                )
            options = pick(entry_block, COMMON_KEYS + STYLE_KEYS[style])
            outputs.append((f"hdf5/{entry}", options))
        return outputs

    def option_warnings(self, block):
        warnings = []
        for entry, entry_block in (block or {}).items():
            if not isinstance(entry_block, Mapping):
                continue
            style = entry_block.get("style", DEFAULT_STYLE)
            if style not in STYLE_KEYS:
                continue  # the schema reports it
            used = COMMON_KEYS + STYLE_KEYS[style]
            for key in entry_block:
                if key in self.option_keys and key not in used:
                    other = next(s for s, keys in STYLE_KEYS.items() if key in keys)
                    default = "" if "style" in entry_block else " (the default)"
                    warnings.append(
                        f"config key hdf5.{entry}.{key}: ignored, it is a key of style "
                        f"{other!r} and entry {entry!r} has style {style!r}{default}"
                    )
        return warnings

    def time_unit(self, options):
        style = options["style"]
        if style == "raster":
            return "bins"
        key, default = UNIT_KEY[style]
        return options.get(key) or default

    def _raw_in_samples(self, options) -> bool:
        return (
            options.get("raw_dataset") is not None
            and options.get("raw_time_dataset") is not None
            and options.get("raw_time_unit") == "samples"
        )

    def uses_fs(self, options):
        return self.time_unit(options) in ("samples", "bins") or self._raw_in_samples(options)

    def needs_fs(self, options):
        return self.time_unit(options) == "samples" or self._raw_in_samples(options)

    def time_tolerance(self, options, fs_Hz):
        if self.time_unit(options) == "bins":  # a spike comes back at its bin's left edge
            return float(options["raster_bin_size_ms"]), 4
        return super().time_tolerance(options, fs_Hz)

    def reader_kwargs(self, options, fs_Hz, *, pickle_loading=None):
        kwargs = pick(options, READER_KEYS[options["style"]])
        if self.time_unit(options) == "samples":
            kwargs["fs_Hz"] = fs_Hz
        return kwargs


FORMAT = HDF5Format()
