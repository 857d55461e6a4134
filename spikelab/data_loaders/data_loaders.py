"""Read SpikeData (times in ms) back from every format the exporters write."""

from spikelab.data_loaders._common import LoadError
from spikelab.data_loaders.hdf5 import load_spikedata_from_hdf5
from spikelab.data_loaders.kilosort import load_spikedata_from_kilosort
from spikelab.data_loaders.nwb import load_spikedata_from_nwb
from spikelab.data_loaders.pickle_io import UnsafePickleError, load_spikedata_from_pickle

__all__ = [
    "LoadError",
    "UnsafePickleError",
    "load_spikedata_from_hdf5",
    "load_spikedata_from_nwb",
    "load_spikedata_from_kilosort",
    "load_spikedata_from_pickle",
]
