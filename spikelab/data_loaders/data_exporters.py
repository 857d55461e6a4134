"""SpikeLab's ``spikelab.data_loaders.data_exporters``: write SpikeData (times in ms) to HDF5,
NWB, a KiloSort/Phy folder or a pickle.

Every exporter validates its arguments before opening any file and writes to a temporary
name beside the target, renaming it into place only on success. Each format's writer lives in
its module under :mod:`spikelab.formats`.

As in SpikeLab 0.1.2, this module exposes ``pickle`` (the pickle module ``export_to_pickle``
dumps with) and ``upload_to_s3``; the S3 upload of ``export_to_pickle`` goes through
``upload_to_s3`` here, which calls ``s3_utils.upload_to_s3``, both looked up at each call, so
replacing either (e.g. with ``unittest.mock.patch``) replaces the upload.
"""

from __future__ import annotations

import os
import pickle  # noqa: F401  (SpikeLab's module exposes it: callers patch pickle.dump here)

from spikelab.data_loaders import s3_utils
from spikelab.formats import pickle_io as _pickle_io
from spikelab.formats.errors import ExportError, OutputInTheWayError
from spikelab.formats.hdf5 import export_spikedata_to_hdf5
from spikelab.formats.kilosort import export_spikedata_to_kilosort
from spikelab.formats.kilosort.write import FolderInTheWayError
from spikelab.formats.nwb import export_spikedata_to_nwb
from spikelab.formats.pickle_io import UnsupportedObjectError

__all__ = [
    "ExportError",
    "OutputInTheWayError",
    "FolderInTheWayError",
    "UnsupportedObjectError",
    "export_spikedata_to_hdf5",
    "export_spikedata_to_nwb",
    "export_spikedata_to_kilosort",
    "export_to_pickle",
]


def upload_to_s3(local_path: str | os.PathLike, s3_url: str, **credentials) -> str:
    """Upload ``local_path`` to ``s3_url``: ``s3_utils.upload_to_s3`` (looked up at each call)."""
    return s3_utils.upload_to_s3(local_path, s3_url, **credentials)


def _upload(local_path: str, s3_url: str, **credentials) -> str:
    return upload_to_s3(local_path, s3_url, **credentials)  # this module's, looked up now


def export_to_pickle(
    obj,
    filepath: str | os.PathLike,
    *,
    protocol: int | None = None,
    s3_upload: bool = False,
    aws_access_key_id: str | None = None,
    aws_secret_access_key: str | None = None,
    aws_session_token: str | None = None,
    region_name: str | None = None,
    endpoint_url: str | None = None,
) -> str:
    """Pickle the SpikeData ``obj`` atomically to ``filepath`` (a local path, or with
    ``s3_upload=True`` an ``s3://bucket/key`` URL); return the path or URL.

    See :func:`spikelab.formats.pickle_io.export_to_pickle`; the upload goes through this
    module's ``upload_to_s3``, which receives the local temporary file's path as a ``str``.
    """
    return _pickle_io.export_to_pickle(
        obj,
        filepath,
        protocol=protocol,
        s3_upload=s3_upload,
        aws_access_key_id=aws_access_key_id,
        aws_secret_access_key=aws_secret_access_key,
        aws_session_token=aws_session_token,
        region_name=region_name,
        endpoint_url=endpoint_url,
        uploader=_upload,
    )
