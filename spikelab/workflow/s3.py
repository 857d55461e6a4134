"""S3 inputs and outputs of the workflow: list and check ``s3://`` locations at parse time.

Snakemake moves the files themselves (``snakemake-storage-plugin-s3``); this module only
answers the questions the workflow must settle before any job starts: which ``*.pkl`` objects
lie under an input prefix, whether the objects a sample sheet names exist, and whether the
bucket of an output prefix exists. It uses the same credentials and endpoint as the storage
plugin, from the environment only: ``SNAKEMAKE_STORAGE_S3_ACCESS_KEY``,
``SNAKEMAKE_STORAGE_S3_SECRET_KEY``, ``SNAKEMAKE_STORAGE_S3_TOKEN``,
``SNAKEMAKE_STORAGE_S3_ENDPOINT_URL`` and ``SNAKEMAKE_STORAGE_S3_REGION`` when set, otherwise
boto3's default chain (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``,
``~/.aws`` files, an instance role), which the plugin falls back to as well.

boto3 is imported only when an ``s3://`` location is configured. Error messages name the URL,
the endpoint and the S3 error code, never a key.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable

from spikelab.data_loaders.s3_utils import is_s3_url, make_client
from spikelab.workflow import WorkflowConfigError

__all__ = [
    "ENV_PREFIX",
    "S3InputError",
    "is_s3_url",
    "split_s3_url",
    "list_pickles",
    "object_sizes",
    "check_bucket",
]

#: Prefix of the environment variables of Snakemake's S3 storage plugin settings.
ENV_PREFIX = "SNAKEMAKE_STORAGE_S3_"


class S3InputError(WorkflowConfigError):
    """An ``s3://`` input or output location cannot be used (no bucket, no access, ...)."""


def split_s3_url(url: str) -> tuple[str, str]:
    """Split ``s3://bucket/key/or/prefix`` into ``(bucket, key)`` (the key may be empty)."""
    if not is_s3_url(url):
        raise S3InputError(f"not an s3:// URL: {url!r}")
    bucket, _, key = url[len("s3://") :].partition("/")
    if not bucket:
        raise S3InputError(f"{url!r}: an S3 URL needs a bucket (s3://bucket/prefix/)")
    return bucket, key


def _env(name: str) -> str | None:
    return os.environ.get(ENV_PREFIX + name) or None


def endpoint_url() -> str | None:
    """The S3 endpoint in use: the plugin's variable, else ``AWS_ENDPOINT_URL``, else AWS."""
    return _env("ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL") or None


def _client():
    """A boto3 S3 client from the plugin's environment variables (else boto3's chain)."""
    return make_client(
        aws_access_key_id=_env("ACCESS_KEY"),
        aws_secret_access_key=_env("SECRET_KEY"),
        aws_session_token=_env("TOKEN"),
        region_name=_env("REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        endpoint_url=endpoint_url(),
    )


def _fail(url: str, exc: BaseException, what: str) -> S3InputError:
    """An S3InputError for a boto3 failure on ``url``, naming the S3 error code, no keys."""
    from botocore.exceptions import ClientError, NoCredentialsError

    where = f" at {endpoint_url()}" if endpoint_url() else ""
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", "error"))
        if code in ("NoSuchBucket", "404"):
            reason = f"the bucket {split_s3_url(url)[0]!r} does not exist{where} ({code})"
        elif code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "403", "AccessDenied"):
            reason = (
                f"access denied{where} ({code}): check the credentials in the environment "
                f"({ENV_PREFIX}ACCESS_KEY/SECRET_KEY or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"
            )
        else:
            reason = f"{code}{where}: {err.get('Message', '')}".strip()
    elif isinstance(exc, NoCredentialsError):
        reason = (
            f"no S3 credentials: set {ENV_PREFIX}ACCESS_KEY and {ENV_PREFIX}SECRET_KEY "
            "(or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) in the environment"
        )
    else:
        reason = f"cannot reach S3{where}: {type(exc).__name__}"
    return S3InputError(f"{what} {url}: {reason}")


def _list_keys(client, bucket: str, prefix: str, *, delimiter: str | None) -> dict[str, int]:
    """``{key: size in bytes}`` of the objects under ``prefix``."""
    kwargs = {"Bucket": bucket, "Prefix": prefix}
    if delimiter:
        kwargs["Delimiter"] = delimiter
    keys: dict[str, int] = {}
    for page in client.get_paginator("list_objects_v2").paginate(**kwargs):
        keys.update((obj["Key"], int(obj.get("Size", 0))) for obj in page.get("Contents", ()))
    return keys


def list_pickles(prefix_url: str) -> list[tuple[str, str, int]]:
    """``(recording name, s3 URL, size in bytes)`` of every ``*.pkl`` object directly under
    ``prefix_url``.

    The prefix is a folder-like location (``s3://bucket/path/``; a missing trailing ``/`` is
    added): objects in deeper "folders" and hidden names (starting with ``.``) are skipped, as
    for a local directory. Raises :class:`S3InputError` when the bucket is missing or
    inaccessible.
    """
    bucket, key = split_s3_url(prefix_url)
    prefix = key if not key or key.endswith("/") else key + "/"
    try:
        keys = _list_keys(_client(), bucket, prefix, delimiter="/")
    except Exception as exc:
        raise _fail(prefix_url, exc, "inputs.directory") from None
    out = []
    for k, size in keys.items():
        base = k[len(prefix) :]
        if base.endswith(".pkl") and not base.startswith(".") and "/" not in base:
            out.append((base[:-4], f"s3://{bucket}/{k}", size))
    return out


def object_sizes(urls: Iterable[str], *, what: str = "inputs.sample_sheet") -> dict[str, int]:
    """``{url: size in bytes}`` of the URLs among ``urls`` (``s3://bucket/key``) that name an
    object; the others are missing.

    Lists each distinct folder once instead of asking for every object. Raises
    :class:`S3InputError` when a bucket is missing or inaccessible.
    """
    client = None
    found: dict[tuple[str, str], dict[str, int]] = {}
    sizes = {}
    for url in urls:
        bucket, key = split_s3_url(url)
        folder = posixpath.dirname(key)
        folder = folder + "/" if folder else ""
        if (bucket, folder) not in found:
            client = client or _client()
            try:
                found[bucket, folder] = _list_keys(client, bucket, folder, delimiter="/")
            except Exception as exc:
                raise _fail(url, exc, what) from None
        if key in found[bucket, folder]:
            sizes[url] = found[bucket, folder][key]
    return sizes


def check_bucket(url: str, *, what: str) -> None:
    """Raise :class:`S3InputError` unless the bucket of ``url`` exists and is accessible."""
    bucket, _ = split_s3_url(url)
    try:
        _client().head_bucket(Bucket=bucket)
    except Exception as exc:
        raise _fail(url, exc, what) from None
