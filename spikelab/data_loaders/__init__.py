"""SpikeLab's public import paths, kept as thin facades over :mod:`spikelab.formats` and
:mod:`spikelab.s3`: ``data_exporters`` (write), ``data_loaders`` (read back), ``s3_utils``."""
