"""KiloSort/Phy folders: :mod:`~spikelab.formats.kilosort.write` (for Phy, phylib and
SpikeInterface), :mod:`~spikelab.formats.kilosort.read` (ours and the sorters'), the folder
layout in :mod:`~spikelab.formats.kilosort.layout`, and the registry entry."""

from spikelab.formats.errors import OptionError
from spikelab.formats.kilosort.layout import SIDE_FILE
from spikelab.formats.kilosort.read import load_spikedata_from_kilosort
from spikelab.formats.kilosort.write import export_spikedata_to_kilosort
from spikelab.formats.registry import Format, ResourceModel

__all__ = ["export_spikedata_to_kilosort", "load_spikedata_from_kilosort", "SIDE_FILE", "FORMAT"]


class KiloSortFormat(Format):
    """A KiloSort/Phy folder per recording (``results/kilosort/<recording>/``)."""

    name = "kilosort"
    description = "KiloSort/Phy folder (spike_times.npy, spike_clusters.npy, params.py, ...)"
    extension = ""
    is_dir = True
    option_keys = (
        "spike_times_file",
        "spike_clusters_file",
        "time_unit",
        "n_channels",
        "dtype",
        "dat_path",
    )
    reader_keys = ("spike_times_file", "spike_clusters_file", "time_unit")
    resources = ResourceModel(base_mem_mb=350)

    def writer(self):
        return export_spikedata_to_kilosort

    def reader(self):
        return load_spikedata_from_kilosort

    def check_options(self, options):
        times, clusters = options.get("spike_times_file"), options.get("spike_clusters_file")
        if times is not None and times == clusters:
            raise OptionError(
                "config keys kilosort.spike_times_file and kilosort.spike_clusters_file must differ"
            )

    def time_unit(self, options):
        return options.get("time_unit", "samples")

    def uses_fs(self, options):
        return True

    def needs_fs(self, options):
        return True

    def reader_kwargs(self, options, fs_Hz, *, pickle_loading=None):
        return {**super().reader_kwargs(options, fs_Hz), "fs_Hz": fs_Hz}


FORMAT = KiloSortFormat()
