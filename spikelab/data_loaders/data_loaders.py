"""SpikeLab's ``spikelab.data_loaders.data_loaders``: read SpikeData (times in ms) back from every
format the exporters write. Each format's reader lives in its module under
:mod:`spikelab.formats`."""

from spikelab.formats.errors import LoadError
from spikelab.formats.hdf5 import load_spikedata_from_hdf5
from spikelab.formats.kilosort import load_spikedata_from_kilosort
from spikelab.formats.nwb import load_spikedata_from_nwb
from spikelab.formats.pickle_io import UnsafePickleError, load_spikedata_from_pickle

__all__ = [
    "LoadError",
    "UnsafePickleError",
    "load_spikedata_from_hdf5",
    "load_spikedata_from_nwb",
    "load_spikedata_from_kilosort",
    "load_spikedata_from_pickle",
    "load_from_pickle",
]

#: SpikeLab 0.1.2's generic pickle loader; here the only object a pickle may hold is a
#: SpikeData (read with the restricted loader), so it is :func:`load_spikedata_from_pickle`.
load_from_pickle = load_spikedata_from_pickle
