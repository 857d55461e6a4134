"""Small S3 helpers on boto3 (imported lazily): URL parsing, upload and download.

Credentials come from boto3's default chain (environment, shared config/credentials files,
instance role) unless given explicitly; ``endpoint_url`` (or the ``AWS_ENDPOINT_URL``
environment variable) points at an S3-compatible store such as MinIO or Ceph.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "S3Error",
    "is_s3_url",
    "parse_s3_url",
    "make_client",
    "upload_to_s3",
    "download_from_s3",
]


class S3Error(RuntimeError):
    """An S3 transfer failed; the message names the URL and the reason (never credentials)."""


def is_s3_url(path: object) -> bool:
    """True when ``path`` is a string of the form ``s3://...``."""
    return isinstance(path, str) and path.startswith("s3://")


def parse_s3_url(url: str) -> tuple[str, str]:
    """Split ``s3://bucket/key`` into ``(bucket, key)``; raise ValueError when malformed."""
    if not is_s3_url(url):
        raise ValueError(f"not an s3:// URL: {url!r}")
    bucket, _, key = url[len("s3://") :].partition("/")
    if not bucket or not key or key.endswith("/"):
        raise ValueError(f"an S3 object URL needs a bucket and a key (s3://bucket/key): {url!r}")
    return bucket, key


def make_client(
    *,
    aws_access_key_id=None,
    aws_secret_access_key=None,
    aws_session_token=None,
    region_name=None,
    endpoint_url=None,
):
    """A boto3 S3 client with standard retries; None arguments fall back to boto3's chain
    (``endpoint_url`` to ``AWS_ENDPOINT_URL``)."""
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(
        aws_access_key_id=aws_access_key_id,
        aws_secret_access_key=aws_secret_access_key,
        aws_session_token=aws_session_token,
        region_name=region_name,
    )
    config = Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=10)
    return session.client(
        "s3", endpoint_url=endpoint_url or os.environ.get("AWS_ENDPOINT_URL"), config=config
    )


def _describe(exc: BaseException) -> str:
    """A short reason for a boto3 failure, without credentials."""
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        return f"{err.get('Code', 'error')}: {err.get('Message', '')}".strip()
    return f"{type(exc).__name__}: {exc}"


def upload_to_s3(local_path: str | os.PathLike, url: str, **client_kwargs) -> str:
    """Upload a local file to ``s3://bucket/key`` (managed multipart transfer); return the URL.

    The local file is never deleted. A failed multipart upload is aborted by boto3, so no
    partial object is left behind.
    """
    from boto3.s3.transfer import TransferConfig

    bucket, key = parse_s3_url(url)
    client = make_client(**client_kwargs)
    try:
        client.upload_file(
            os.fspath(local_path),
            bucket,
            key,
            Config=TransferConfig(multipart_threshold=8 * 1024 * 1024),
        )
    except Exception as exc:
        raise S3Error(f"upload to {url} failed: {_describe(exc)}") from None
    return url


def download_from_s3(url: str, local_path: str | os.PathLike, **client_kwargs) -> Path:
    """Download ``s3://bucket/key`` to ``local_path`` (written atomically); return the path."""
    from spikelab.data_loaders._common import atomic_file

    bucket, key = parse_s3_url(url)
    client = make_client(**client_kwargs)
    try:
        with atomic_file(local_path) as tmp:
            client.download_file(bucket, key, os.fspath(tmp))
    except Exception as exc:
        raise S3Error(f"download of {url} failed: {_describe(exc)}") from None
    return Path(local_path)
