"""KiloSort/Phy folders: :mod:`~spikelab.formats.kilosort.write` (for Phy, phylib and
SpikeInterface), :mod:`~spikelab.formats.kilosort.read` (ours and the sorters'), the folder
layout in :mod:`~spikelab.formats.kilosort.layout`, and the registry entry."""

import os
from pathlib import Path

from spikelab.formats.errors import LoadError, OptionError
from spikelab.formats.kilosort.layout import SIDE_FILE
from spikelab.formats.kilosort.read import _read_params, load_spikedata_from_kilosort
from spikelab.formats.kilosort.write import export_spikedata_to_kilosort
from spikelab.formats.registry import Format, ResourceModel, pick

__all__ = ["export_spikedata_to_kilosort", "load_spikedata_from_kilosort", "SIDE_FILE", "FORMAT"]


#: Files that make a folder a KiloSort/Phy input.
INPUT_MARKERS = ("spike_times.npy", "params.py")
#: Files of a KiloSort/Phy folder the reader may read (a change re-runs its conversions).
INPUT_FILES = (
    "params.py",
    "spike_times.npy",
    "spike_clusters.npy",
    "spike_templates.npy",
    "cluster_group.tsv",
    "cluster_KSLabel.tsv",
    "cluster_info.tsv",
    "channel_positions.npy",
    "channel_map.npy",
    SIDE_FILE,
)


def _has_sample_rate(folder: str) -> bool:
    """True when the folder's params.py gives a ``sample_rate`` (read, never executed)."""
    try:
        return _read_params(Path(folder) / "params.py").get("sample_rate") is not None
    except (LoadError, OSError):
        return True  # the reader reports the fault


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

    input_uses_fs = True
    input_keys = (
        "spike_times_file",
        "spike_clusters_file",
        "time_unit",
        "cluster_info_tsv",
        "include_noise",
    )

    def is_input_folder(self, path):
        """A folder holding ``spike_times.npy`` and ``params.py``, as the sorters write it."""
        return all(os.path.isfile(os.path.join(path, f)) for f in INPUT_MARKERS)

    def input_files(self, path):
        return [os.path.join(path, f) for f in INPUT_FILES if os.path.isfile(os.path.join(path, f))]

    def input_kwargs(self, path, read_options, fs_Hz, default_fs_Hz, *, pickle_loading=None):
        """The sample sheet's rate wins over params.py's ``sample_rate``; the config's
        ``fs_Hz`` applies only when params.py has none."""
        kwargs = pick(read_options, self.input_keys)
        if fs_Hz is None and default_fs_Hz is not None and not _has_sample_rate(path):
            fs_Hz = default_fs_Hz
        kwargs["fs_Hz"] = fs_Hz
        return kwargs


FORMAT = KiloSortFormat()
