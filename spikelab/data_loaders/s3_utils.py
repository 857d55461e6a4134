"""SpikeLab's ``spikelab.data_loaders.s3_utils``: S3 URL parsing and transfers (boto3, imported
lazily). The implementation lives in :mod:`spikelab.s3`."""

from spikelab.s3 import (
    S3Error,
    download_from_s3,
    ensure_local_file,
    is_s3_url,
    make_client,
    parse_s3_url,
    upload_to_s3,
)

__all__ = [
    "S3Error",
    "is_s3_url",
    "parse_s3_url",
    "make_client",
    "upload_to_s3",
    "download_from_s3",
    "ensure_local_file",
]
