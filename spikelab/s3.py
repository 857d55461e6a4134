"""S3 on boto3 (imported lazily): one URL parser, transfers, and the listings and checks the
workflow makes before any job starts.

- Transfers (:func:`upload_to_s3`, :func:`download_from_s3`), for the library's
  ``export_to_pickle(s3_upload=True)`` and ``load_spikedata_from_pickle(allow_remote=True)``:
  credentials from boto3's default chain (environment, shared config/credentials files,
  instance role) unless given explicitly; ``endpoint_url`` (or ``AWS_ENDPOINT_URL``) points at
  an S3-compatible store such as MinIO or Ceph. Failures raise :class:`S3Error`.
- Workflow checks (:func:`list_pickles`, :func:`object_sizes`, :func:`check_bucket`): which
  ``*.pkl`` objects lie under an input prefix, whether the objects a sample sheet names exist,
  whether the bucket of an output prefix exists. Snakemake's storage plugin
  (``snakemake-storage-plugin-s3``) moves the workflow's files; these use the same credentials
  and endpoint, from the environment only: ``SNAKEMAKE_STORAGE_S3_ACCESS_KEY``,
  ``SNAKEMAKE_STORAGE_S3_SECRET_KEY``, ``SNAKEMAKE_STORAGE_S3_TOKEN``,
  ``SNAKEMAKE_STORAGE_S3_ENDPOINT_URL`` and ``SNAKEMAKE_STORAGE_S3_REGION`` when set, otherwise
  boto3's default chain, which the plugin falls back to as well. Failures raise
  :class:`S3LocationError`.

Error messages name the URL, the endpoint and the S3 error code, never a key.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "ENV_PREFIX",
    "S3Error",
    "redact",
    "S3LocationError",
    "is_s3_url",
    "parse_s3_url",
    "make_client",
    "upload_to_s3",
    "download_from_s3",
    "ensure_local_file",
    "list_pickles",
    "object_sizes",
    "check_bucket",
]

#: Prefix of the environment variables of Snakemake's S3 storage plugin settings.
ENV_PREFIX = "SNAKEMAKE_STORAGE_S3_"


class S3Error(RuntimeError):
    """An S3 transfer failed; the message names the URL and the reason (never credentials)."""


class S3LocationError(ValueError):
    """An ``s3://`` input or output location cannot be used (no bucket, no access, ...)."""


def is_s3_url(url: object) -> bool:
    """True when ``url`` is a string of the form ``s3://...``."""
    return isinstance(url, str) and url.startswith("s3://")


def parse_s3_url(url: str, *, prefix: bool = False) -> tuple[str, str]:
    """Split ``s3://bucket/key`` into ``(bucket, key)``; raise ValueError when malformed.

    An object URL (the default) needs a key that does not end in ``/``. With ``prefix=True``
    the URL names a folder-like location (``s3://bucket/path/``): the key may be empty, and
    a non-empty one is returned ending in ``/`` (added when missing).
    """
    if not is_s3_url(url):
        raise ValueError(f"not an s3:// URL: {url!r}")
    bucket, _, key = url[len("s3://") :].partition("/")
    if prefix:
        if not bucket:
            raise ValueError(f"{url!r}: an S3 URL needs a bucket (s3://bucket/prefix/)")
        return bucket, key if not key or key.endswith("/") else key + "/"
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


# ------------------------------------------------------------------------------ redaction
_SECRET_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    ENV_PREFIX + "ACCESS_KEY",
    ENV_PREFIX + "SECRET_KEY",
    ENV_PREFIX + "TOKEN",
)
_CREDENTIAL = re.compile(r"(Credential=)[^\s,;\"'&]+", re.IGNORECASE)
_KEY_ID = re.compile(r"\b(?:AKIA|ASIA|AROA|AIDA)[A-Z0-9]{12,}\b")


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` without credentials: the ``Credential=...`` part of an echoed request, anything
    shaped like an AWS access key id, and every value of ``secrets`` and of the credential
    environment variables (AWS_* and SNAKEMAKE_STORAGE_S3_*)."""
    text = _CREDENTIAL.sub(r"\1<redacted>", text)
    text = _KEY_ID.sub("<redacted key id>", text)
    values = [*secrets, *(os.environ.get(name) for name in _SECRET_VARIABLES)]
    for value in sorted({v for v in values if v and len(v) >= 4}, key=len, reverse=True):
        text = text.replace(value, "<redacted>")
    return text


# ------------------------------------------------------------------------------ transfers
def _describe(exc: BaseException, secrets: Iterable[str | None] = ()) -> str:
    """A short reason for a boto3 failure, without credentials."""
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        text = f"{err.get('Code', 'error')}: {err.get('Message', '')}".strip()
    else:
        text = f"{type(exc).__name__}: {exc}"
    return redact(text, secrets)


def _secrets(client_kwargs: dict) -> list[str | None]:
    keys = ("aws_access_key_id", "aws_secret_access_key", "aws_session_token")
    return [client_kwargs.get(k) for k in keys]


def upload_to_s3(local_path: str | os.PathLike, s3_url: str, **client_kwargs) -> str:
    """Upload a local file to ``s3_url`` (``s3://bucket/key``; managed multipart transfer);
    return the URL. ``client_kwargs`` are :func:`make_client`'s (credentials, region,
    endpoint).

    The local file is never deleted. A failed multipart upload is aborted by boto3, so no
    partial object is left behind.
    """
    from boto3.s3.transfer import TransferConfig

    url = s3_url
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
        raise S3Error(
            f"upload to {url} failed: {_describe(exc, _secrets(client_kwargs))}"
        ) from None
    return url


def download_from_s3(
    url: str, local_path: str | os.PathLike | None = None, **client_kwargs
) -> Path:
    """Download ``s3://bucket/key`` to ``local_path`` (written atomically); return the path.

    ``client_kwargs`` are :func:`make_client`'s (credentials, region, endpoint). Without
    ``local_path`` (as SpikeLab 0.1.2 allows) the object goes to a new temporary file
    named with the key's suffix, removed again if the download fails; the caller removes it
    after use.
    """
    from spikelab.formats.atomic import atomic_file

    bucket, key = parse_s3_url(url)
    client = make_client(**client_kwargs)
    temporary = local_path is None
    if temporary:
        import tempfile

        fd, name = tempfile.mkstemp(prefix="spikelab-s3-", suffix=posixpath.splitext(key)[1])
        os.close(fd)
        local_path = name
    try:
        with atomic_file(local_path) as tmp:
            client.download_file(bucket, key, os.fspath(tmp))
    except Exception as exc:
        if temporary:
            with contextlib.suppress(OSError):
                os.unlink(local_path)
        reason = _describe(exc, _secrets(client_kwargs))
        raise S3Error(f"download of {url} failed: {reason}") from None
    return Path(local_path)


def ensure_local_file(file_path_or_url: str | os.PathLike, **client_kwargs) -> tuple[str, bool]:
    """SpikeLab 0.1.2's helper: ``(local path, is_temporary)`` for a local path or an
    ``s3://`` URL (downloaded to a temporary file that the caller removes after use;
    ``client_kwargs`` as for :func:`download_from_s3`).

    A local path that does not exist raises FileNotFoundError.
    """
    if is_s3_url(file_path_or_url):
        return str(download_from_s3(file_path_or_url, **client_kwargs)), True
    path = os.fspath(file_path_or_url)
    if not os.path.exists(path):
        raise FileNotFoundError(f"File not found: {path}")
    return path, False


# ------------------------------------------------------------------ workflow locations
def _location(url: str) -> tuple[str, str]:
    """``parse_s3_url(url, prefix=True)``, failing with S3LocationError."""
    try:
        return parse_s3_url(url, prefix=True)
    except ValueError as exc:
        raise S3LocationError(str(exc)) from None


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


def _fail(url: str, exc: BaseException, what: str) -> S3LocationError:
    """An S3LocationError for a boto3 failure on ``url``, naming the S3 error code, no keys."""
    from botocore.exceptions import ClientError, NoCredentialsError

    where = f" at {endpoint_url()}" if endpoint_url() else ""
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", "error"))
        if code in ("NoSuchBucket", "404"):
            reason = f"the bucket {_location(url)[0]!r} does not exist{where} ({code})"
        elif code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "403", "AccessDenied"):
            reason = (
                f"access denied{where} ({code}): check the credentials in the environment "
                f"({ENV_PREFIX}ACCESS_KEY/SECRET_KEY or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"
            )
        else:
            reason = f"{code}{where}: {err.get('Message', '')}".strip()
        reason = redact(reason)
    elif isinstance(exc, NoCredentialsError):
        reason = (
            f"no S3 credentials: set {ENV_PREFIX}ACCESS_KEY and {ENV_PREFIX}SECRET_KEY "
            "(or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) in the environment"
        )
    else:
        reason = f"cannot reach S3{where}: {type(exc).__name__}"
    return S3LocationError(f"{what} {url}: {reason}")


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
    for a local directory. Raises :class:`S3LocationError` when the bucket is missing or
    inaccessible.
    """
    bucket, prefix = _location(prefix_url)
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
    :class:`S3LocationError` when a bucket is missing or inaccessible.
    """
    client = None
    found: dict[tuple[str, str], dict[str, int]] = {}
    sizes = {}
    for url in urls:
        try:
            bucket, key = parse_s3_url(url)
        except ValueError:  # not an object URL: missing
            continue
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
    """Raise :class:`S3LocationError` unless the bucket of ``url`` exists and is accessible."""
    bucket, _ = _location(url)
    try:
        _client().head_bucket(Bucket=bucket)
    except Exception as exc:
        raise _fail(url, exc, what) from None
