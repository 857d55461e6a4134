"""File formats: one module per format (writer, reader and registry entry) and the pieces they
share.

- :mod:`~spikelab.formats.registry`: the registry (:func:`get_format`) and the :class:`Format`
  interface every entry implements.
- Formats: :mod:`~spikelab.formats.hdf5` (four layouts), :mod:`~spikelab.formats.nwb`,
  :mod:`~spikelab.formats.kilosort` (KiloSort/Phy folders), :mod:`~spikelab.formats.pickle_io`.
- Shared pieces: :mod:`~spikelab.formats.errors`, :mod:`~spikelab.formats.atomic` (atomic
  writes), :mod:`~spikelab.formats.time_units`, :mod:`~spikelab.formats.streaming` (spike
  times in blocks), :mod:`~spikelab.formats.time_order` (every spike in time order, window
  by window), :mod:`~spikelab.formats.metadata` (attributes as JSON).
- Reading hostile files: :mod:`~spikelab.formats.files` (regular files only, bounded reads,
  checked .npy headers, one LoadError at every loader's boundary),
  :mod:`~spikelab.formats.strict_hdf5` (HDF5 without links, external storage or virtual
  datasets, sizes checked first), :mod:`~spikelab.formats.pickle_scan` and
  :mod:`~spikelab.formats.pickle_unpickler` (the pickle loader's scan and restricted
  unpickler).

Importing this package imports no format module; :func:`get_format` imports one on demand.
"""

from spikelab.formats.registry import Format, ResourceModel, all_formats, format_names, get_format

__all__ = ["Format", "ResourceModel", "get_format", "format_names", "all_formats"]
