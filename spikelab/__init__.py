"""spikelab: export pickled SpikeData recordings to HDF5, NWB, KiloSort/Phy and pickle.

``SpikeData``, the loaders (``load_spikedata_from_hdf5``, ``_nwb``, ``_kilosort``,
``_pickle``) and the exporters (``export_spikedata_to_hdf5``, ``_nwb``, ``_kilosort``,
``export_to_pickle``) are importable from here; each is imported on first use, so that
``import spikelab`` stays light (writing HDF5 never imports pynwb).
"""

from __future__ import annotations

import importlib

__version__ = "0.2.0"

_WHERE = {
    "SpikeData": "spikelab.spikedata",
    "load_spikedata_from_hdf5": "spikelab.data_loaders.data_loaders",
    "load_spikedata_from_nwb": "spikelab.data_loaders.data_loaders",
    "load_spikedata_from_kilosort": "spikelab.data_loaders.data_loaders",
    "load_spikedata_from_pickle": "spikelab.data_loaders.data_loaders",
    "export_spikedata_to_hdf5": "spikelab.data_loaders.data_exporters",
    "export_spikedata_to_nwb": "spikelab.data_loaders.data_exporters",
    "export_spikedata_to_kilosort": "spikelab.data_loaders.data_exporters",
    "export_to_pickle": "spikelab.data_loaders.data_exporters",
}

__all__ = ["__version__", *_WHERE]


def __getattr__(name: str):
    # Lazy so that `import spikelab` and `import spikelab.data_loaders...` stay light.
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__():
    return sorted(set(globals()) | set(__all__))
