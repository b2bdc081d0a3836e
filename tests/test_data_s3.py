"""Shards in a real S3 server (SeaweedFS on loopback): upload, stream back, credentials, faults."""

import threading

import numpy as np
import pytest
import torch
import webdataset as wds
from data_helpers import indices, write_synthetic

from distdiff.data import DataError, build_stream, preflight, read_manifest
from distdiff.data import storage

B, SEED = 8, 5


@pytest.fixture(scope="module")
def local_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("local")
    images, labels = write_synthetic(str(root), 150, 12, channels=3, size=8)
    return str(root), images, labels


def test_upload_then_stream_back_identical_samples(s3_bucket, local_dataset):
    root, images, labels = local_dataset
    url = f"s3://{s3_bucket}/cifar-like"
    write_synthetic(url, 150, 12, channels=3, size=8)
    assert read_manifest(url).dataset_hash == read_manifest(root).dataset_hash  # byte-identical shards
    assert preflight(url, world_size=2, num_workers=2, batch_size=B).num_samples == 150
    from_s3 = list(build_stream(url, B, 1, 2, SEED, num_workers=2, epochs=1))
    from_disk = list(build_stream(root, B, 1, 2, SEED, num_workers=2, epochs=1))
    assert len(from_s3) == len(from_disk) == 150 // (2 * B)
    for a, b in zip(from_s3, from_disk):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    np.testing.assert_array_equal(labels[indices(from_s3)], [int(l) for b in from_s3 for l in b["label"]])


def test_webdataset_opens_s3_urls_through_boto3(s3_bucket):
    url = f"s3://{s3_bucket}/wds"
    images, _ = write_synthetic(url, 10, 10)
    shard = storage.join(url, read_manifest(url).shards[0].name)
    samples = list(wds.WebDataset(shard, shardshuffle=False, empty_check=False))
    assert [s["__key__"] for s in samples] == [f"sample{i:06d}" for i in range(10)]
    assert int(samples[3]["cls"]) == 3


def test_wrong_credentials_give_a_clear_error(s3_bucket, monkeypatch):
    url = f"s3://{s3_bucket}/creds"
    write_synthetic(url, 20, 10)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(DataError, match="access denied") as err:
        preflight(url, 1, 0)
    assert "not-the-secret" not in str(err.value)
    with pytest.raises(DataError, match="access denied"):
        build_stream(url, 4, 0, 1, 0)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "nobody")
    with pytest.raises(DataError, match="access denied"):
        preflight(url, 1, 0)


def test_missing_bucket_or_dataset_is_named(s3_env):
    with pytest.raises(DataError, match="no-such-bucket-here"):
        preflight("s3://no-such-bucket-here/x", 1, 0)


@pytest.mark.slow
def test_reader_resumes_mid_object_after_server_restart(s3_bucket, seaweed):
    url = f"s3://{s3_bucket}/big.bin"
    payload = np.random.default_rng(0).integers(0, 256, 24 << 20, dtype=np.uint8).tobytes()
    storage.write_bytes(url, payload)
    reader = storage.S3ObjectReader(url)
    head = reader.read(1 << 20)
    seaweed.restart(kill=True)  # the open connection dies with the server
    rest = bytearray()
    while chunk := reader.read(1 << 20):
        rest += chunk
    assert head + bytes(rest) == payload
    assert reader.retries >= 1  # it reconnected with a ranged GET instead of starting over


@pytest.mark.slow
def test_stream_survives_a_server_restart_without_losing_or_repeating(s3_bucket, seaweed):
    url = f"s3://{s3_bucket}/fault"
    write_synthetic(url, 240, 6)
    reference = indices(build_stream(url, B, 0, 1, SEED, num_workers=2, epochs=1, prefetch_shards=1))
    stream = build_stream(url, B, 0, 1, SEED, num_workers=2, epochs=1, prefetch_shards=1)
    it = iter(stream)
    got = indices([next(it) for _ in range(3)])
    seaweed.stop(kill=True)
    restarter = threading.Timer(1.5, seaweed.start)  # the outage lasts while the stream keeps reading
    restarter.start()
    try:
        got += indices(it)
    finally:
        restarter.join()
    assert got == reference
    assert stream.metrics()["retries"] >= 1
