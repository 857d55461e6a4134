"""SpikeLab's public import paths, kept as thin facades over :mod:`spikelab.formats` and
:mod:`spikelab.s3`: ``data_exporters`` (write), ``data_loaders`` (read back), ``s3_utils``.

As in SpikeLab 0.1.2, the loaders, exporters and S3 helpers can be imported from this package
too (``from spikelab.data_loaders import load_spikedata_from_hdf5``); they are imported on
first use, so importing the package stays light.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "data_loaders": (
        "load_spikedata_from_hdf5",
        "load_spikedata_from_nwb",
        "load_spikedata_from_kilosort",
        "load_spikedata_from_pickle",
        "load_from_pickle",
    ),
    "data_exporters": (
        "export_spikedata_to_hdf5",
        "export_spikedata_to_nwb",
        "export_spikedata_to_kilosort",
        "export_to_pickle",
    ),
    "s3_utils": (
        "download_from_s3",
        "upload_to_s3",
        "ensure_local_file",
        "is_s3_url",
        "parse_s3_url",
    ),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [name for names in _EXPORTS.values() for name in names]


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__():
    return sorted(set(globals()) | set(__all__))
