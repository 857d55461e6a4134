"""SpikeLab's ``spikelab.data_loaders.data_exporters``: write SpikeData (times in ms) to HDF5,
NWB, a KiloSort/Phy folder or a pickle.

Every exporter validates its arguments before opening any file and writes to a temporary
name beside the target, renaming it into place only on success. Each format's writer lives in
its module under :mod:`spikelab.formats`.
"""

from spikelab.formats.errors import ExportError, OutputInTheWayError
from spikelab.formats.hdf5 import export_spikedata_to_hdf5
from spikelab.formats.kilosort import export_spikedata_to_kilosort
from spikelab.formats.nwb import export_spikedata_to_nwb
from spikelab.formats.pickle_io import export_to_pickle

__all__ = [
    "ExportError",
    "OutputInTheWayError",
    "export_spikedata_to_hdf5",
    "export_spikedata_to_nwb",
    "export_spikedata_to_kilosort",
    "export_to_pickle",
]
