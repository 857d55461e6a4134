"""What a KiloSort/Phy folder written by SpikeLab holds: file names, the side file, labels."""

from __future__ import annotations

__all__ = ["SIDE_FILE", "FIXED_FILES", "RESERVED_COLUMNS", "label"]

SIDE_FILE = "spikelab.json"
#: Files the exporter always writes (the spike times and clusters files are named by options).
FIXED_FILES = (
    "spike_templates.npy",
    "amplitudes.npy",
    "params.py",
    "channel_map.npy",
    "channel_positions.npy",
    "cluster_group.tsv",
    "cluster_info.tsv",
    SIDE_FILE,
)
# Columns of cluster_info.tsv that the exporter fills itself; attributes with these names stay
# in spikelab.json only. ``si_unit_id`` would make SpikeInterface renumber the units.
RESERVED_COLUMNS = {"cluster_id", "id", "group", "KSLabel", "ch", "n_spikes", "si_unit_id"}


def label(attr: dict, keys: tuple[str, ...], default: str | None) -> str | None:
    """The first non-empty text among ``attr[key]`` for ``keys``, else ``default``."""
    for key in keys:
        value = attr.get(key)
        if isinstance(value, str) and value:
            return value
    return default
