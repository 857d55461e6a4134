"""S3 upload/download against a real S3 endpoint (moto's server) on 127.0.0.1."""

import os
import tempfile
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
