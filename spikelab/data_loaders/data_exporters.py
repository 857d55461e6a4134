"""Write SpikeData (times in ms) to HDF5, NWB, a KiloSort/Phy folder or a pickle.

Every exporter validates its arguments before opening any file and writes to a temporary
name beside the target, renaming it into place only on success.
"""

from spikelab.data_loaders._common import ExportError, OutputInTheWayError
from spikelab.data_loaders.hdf5 import export_spikedata_to_hdf5
from spikelab.data_loaders.kilosort import export_spikedata_to_kilosort
from spikelab.data_loaders.nwb import export_spikedata_to_nwb
from spikelab.data_loaders.pickle_io import export_to_pickle

__all__ = [
    "ExportError",
    "OutputInTheWayError",
    "export_spikedata_to_hdf5",
    "export_spikedata_to_nwb",
    "export_spikedata_to_kilosort",
    "export_to_pickle",
]
