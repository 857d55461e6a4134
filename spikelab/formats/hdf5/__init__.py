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


#: The writer's default dataset and group names.
_WRITER_NAME_DEFAULTS = {
    "spike_times_dataset": "spike_times",
    "spike_times_index_dataset": "spike_times_index",
    "group_per_unit": "units",
    "idces_dataset": "idces",
    "times_dataset": "times",
}
#: The attribute naming each style's time dataset (a group's: its unit datasets).
_TIME_DATASET = {
    "ragged": "spike_times_dataset",
    "group": "group_per_unit",
    "paired": "times_dataset",
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

    input_uses_fs = True
    input_suffixes = (".h5", ".hdf5")
    input_keys = tuple(dict.fromkeys(k for keys in READER_KEYS.values() for k in keys)) + (
        "raw_dataset",
        "raw_time_dataset",
        "raw_time_unit",
    )

    def input_reader(self, path, read_options):
        """An NWB file named ``.h5`` (an ``nwb_version`` root attribute and no SpikeLab style)
        is read as NWB."""
        if any(read_options.get(k) is not None for k in self.input_keys):
            return self
        from spikelab.formats.registry import get_format
        from spikelab.formats.strict_hdf5 import open_hdf5

        try:
            with open_hdf5(path, path) as h5:
                nwb = h5.attr(h5.f, "nwb_version") is not None
                ours = h5.attr(h5.f, "spikelab_style") is not None
        except Exception:  # noqa: BLE001 - the reader reports the file's fault
            return self
        return get_format("nwb") if nwb and not ours else self

    def input_kwargs(self, path, read_options, fs_Hz, default_fs_Hz, *, pickle_loading=None):
        kwargs = pick(read_options, self.input_keys)
        kwargs["fs_Hz"] = fs_Hz
        kwargs["default_fs_Hz"] = default_fs_Hz
        return kwargs

    def same_as_input(self, path, options):
        """Our own ragged, group or paired file (no external link or virtual dataset anywhere)
        with the same dataset names and time units and no raw data. A raster is always
        re-written (its chunking and compression are not recorded)."""
        style = options.get("style")
        if style not in UNIT_KEY or options.get("raw_dataset") is not None:
            return False
        from spikelab.formats.strict_hdf5 import open_hdf5

        key, default_unit = UNIT_KEY[style]
        wanted_unit = options.get(key) or default_unit
        names = [k for k in STYLE_KEYS[style] if k != key]
        try:
            with open_hdf5(path, path) as h5:
                h5.check_whole_file()  # a copy must carry no external link anywhere
                f = h5.f
                if h5.text_attr(f, "spikelab_style") != style or h5.attr(f, "raw_dataset"):
                    return False
                for k in names:
                    if h5.text_attr(f, k) != options.get(k, _WRITER_NAME_DEFAULTS[k]):
                        return False
                time_name = h5.text_attr(f, _TIME_DATASET[style])
                obj = f.get(time_name) if time_name else None
                if style == "group":
                    obj = next(iter(obj.values()), None) if obj is not None else None
                if obj is None or h5.text_attr(obj, "unit") != wanted_unit:
                    return False
                return wanted_unit != "samples"  # samples depend on the rate asked for
        except Exception:  # noqa: BLE001 - not ours, or unreadable: re-write it
            return False

    def reader_kwargs(self, options, fs_Hz, *, pickle_loading=None):
        kwargs = pick(options, READER_KEYS[options["style"]])
        if self.time_unit(options) == "samples":
            kwargs["fs_Hz"] = fs_Hz
        return kwargs


FORMAT = HDF5Format()
