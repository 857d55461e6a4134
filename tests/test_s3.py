"""S3 upload/download against a real S3 endpoint (moto's server) on 127.0.0.1."""

import http.server
import os
import tempfile
import threading
import uuid

import numpy as np
import pytest
from s3_server import free_port, running_s3_server
from spikedata_factories import assert_same_trains, fixture

from spikelab.data_loaders import s3_utils
from spikelab.data_loaders.data_exporters import export_to_pickle
from spikelab.data_loaders.data_loaders import load_spikedata_from_pickle
from spikelab.spikedata import SpikeData


@pytest.fixture(scope="module")
def s3():
    with running_s3_server() as endpoint:
        yield endpoint


@pytest.fixture
def bucket(s3, monkeypatch):
    """A fresh bucket; credentials and endpoint only in the environment (boto3's chain)."""
    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    name = f"b-{uuid.uuid4().hex[:12]}"
    s3.client().create_bucket(Bucket=name)
    return name


def test_pickle_round_trip_through_s3_with_the_default_credential_chain(bucket, tmp_path):
    sd = fixture("small")
    url = export_to_pickle(sd, f"s3://{bucket}/rec/small.pkl", s3_upload=True)
    assert url == f"s3://{bucket}/rec/small.pkl"
    back = load_spikedata_from_pickle(url, allow_remote=True)
    assert_same_trains(sd, back)
    assert back.metadata == sd.metadata


def test_explicit_keys_and_endpoint_work_without_environment(s3, bucket, monkeypatch):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(key)
    sd = SpikeData([[1.0, 2.0]], length=3.0)
    creds = dict(
        aws_access_key_id=s3.access_key_id,
        aws_secret_access_key=s3.secret_access_key,
        region_name="us-east-1",
        endpoint_url=s3.url,
    )
    url = export_to_pickle(sd, f"s3://{bucket}/x.pkl", s3_upload=True, **creds)
    assert_same_trains(sd, load_spikedata_from_pickle(url, allow_remote=True, **creds))


def test_large_upload_is_multipart_and_keeps_the_local_source(s3, bucket, tmp_path):
    rng = np.random.default_rng(0)
    sd = SpikeData([np.sort(rng.uniform(0, 1e6, 650_000)) for _ in range(10)], length=1e6)
    local = export_to_pickle(sd, tmp_path / "big.pkl")
    size = os.path.getsize(local)
    assert size > 50e6
    url = f"s3://{bucket}/big.pkl"
    s3_utils.upload_to_s3(local, url)
    assert os.path.exists(local)
    head = s3.client().head_object(Bucket=bucket, Key="big.pkl")
    assert head["ContentLength"] == size
    assert "-" in head["ETag"]  # multipart ETags end in -<parts>
    back = load_spikedata_from_pickle(url, allow_remote=True)
    assert_same_trains(sd, back)


def test_missing_bucket_is_a_clear_error_and_leaves_nothing(bucket, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the upload stages its file
    before = set(os.listdir(tmp_path))
    with pytest.raises(s3_utils.S3Error, match=r"s3://no-such-bucket-x/a.pkl.*NoSuchBucket"):
        export_to_pickle(SpikeData([[1.0]]), "s3://no-such-bucket-x/a.pkl", s3_upload=True)
    assert set(os.listdir(tmp_path)) == before
    with pytest.raises(s3_utils.S3Error, match="no-such-bucket-x"):
        load_spikedata_from_pickle("s3://no-such-bucket-x/a.pkl", allow_remote=True)


def test_wrong_keys_fail_clearly_without_echoing_the_secret(s3, bucket, monkeypatch):
    secret = "wrong-secret-" + uuid.uuid4().hex
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    with pytest.raises(s3_utils.S3Error) as err:
        export_to_pickle(SpikeData([[1.0]]), f"s3://{bucket}/w.pkl", s3_upload=True)
    text = str(err.value)
    assert f"s3://{bucket}/w.pkl" in text and secret not in text
    assert "InvalidAccessKeyId" in text or "SignatureDoesNotMatch" in text or "403" in text
    assert "Contents" not in s3.client().list_objects_v2(Bucket=bucket)


def test_endpoint_down_is_a_clear_error(bucket, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(s3_utils.S3Error, match="Could not connect|EndpointConnectionError"):
        load_spikedata_from_pickle(f"s3://{bucket}/none.pkl", allow_remote=True)


@pytest.mark.parametrize("url", ["s3://", "s3://bucket", "s3://bucket/", "s3://bucket/dir/"])
def test_malformed_urls_are_rejected(url):
    with pytest.raises(ValueError, match="bucket and a key"):
        s3_utils.parse_s3_url(url)


class _EchoingS3(http.server.BaseHTTPRequestHandler):
    """An S3-compatible endpoint that refuses every request with an error message echoing the
    request's Authorization header, as some stores do."""

    def _refuse(self):
        body = (
            "<?xml version='1.0' encoding='UTF-8'?><Error><Code>SignatureDoesNotMatch</Code>"
            f"<Message>Bad signature for request with {self.headers.get('Authorization')}"
            "</Message></Error>"
        ).encode()
        self.send_response(403)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_HEAD = _refuse

    def log_message(self, *args):
        pass


def test_an_endpoint_echoing_the_request_never_puts_a_key_id_in_an_error(tmp_path, monkeypatch):
    from spikelab import s3 as s3_module

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EchoingS3)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    key_id, secret = "AKIAECHOTESTSPIKE9Z3Q", "echoSecret/spikelab+DoNotLeak"
    try:
        for name, value in {
            "AWS_ACCESS_KEY_ID": key_id,
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }.items():
            monkeypatch.setenv(name, value)
        local = tmp_path / "a.pkl"
        export_to_pickle(SpikeData([[1.0]], length=2.0), local)
        texts = []
        for call in (
            lambda: s3_utils.upload_to_s3(local, "s3://bucket/a.pkl"),
            lambda: s3_utils.download_from_s3("s3://bucket/a.pkl", tmp_path / "b.pkl"),
            lambda: s3_module.list_pickles("s3://bucket/in/"),
            lambda: s3_module.check_bucket("s3://bucket/out", what="--default-storage-prefix"),
        ):
            with pytest.raises((s3_utils.S3Error, s3_module.S3LocationError)) as err:
                call()
            texts.append(str(err.value))
        assert any("Credential=<redacted>" in t for t in texts), texts  # the echo was there
        assert not [t for t in texts if key_id in t or secret in t], texts
    finally:
        server.shutdown()


def test_download_without_a_local_path_and_ensure_local_file_as_in_spikelab(bucket, tmp_path):
    sd = SpikeData([[1.0, 2.0]], length=3.0)
    url = export_to_pickle(sd, f"s3://{bucket}/d/x.pkl", s3_upload=True)
    local = s3_utils.download_from_s3(url)
    try:
        assert local.suffix == ".pkl"
        assert_same_trains(sd, load_spikedata_from_pickle(local))
    finally:
        local.unlink()
    path, temporary = s3_utils.ensure_local_file(url)
    try:
        assert temporary and path != str(local)
        assert_same_trains(sd, load_spikedata_from_pickle(path))
    finally:
        os.unlink(path)
    export_to_pickle(sd, tmp_path / "here.pkl")
    assert s3_utils.ensure_local_file(str(tmp_path / "here.pkl")) == (
        str(tmp_path / "here.pkl"),
        False,
    )
    with pytest.raises(FileNotFoundError):
        s3_utils.ensure_local_file(str(tmp_path / "nope.pkl"))


def test_a_failed_download_to_a_temporary_file_leaves_nothing(bucket, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(s3_utils.S3Error, match="missing.pkl"):
        s3_utils.download_from_s3(f"s3://{bucket}/missing.pkl")
    assert list(tmp_path.iterdir()) == []
