"""Latent shards: images encoded once, then streamed as posterior mean and log-variance."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from data_helpers import write_synthetic

from distdiff.data import DataError, PoolEncoder, build_stream, describe_shards, encode_latent_shards
from distdiff.tasks import VAEEncoder

B, SEED = 8, 3


@pytest.fixture(scope="module")
def images_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    images, labels = write_synthetic(str(root), 60, 8, channels=1, size=16)
    return str(root), images, labels


def _check_latent_batches(batches, images, labels, factor):
    for batch in batches:
        i = batch["index"].numpy()
        x = torch.from_numpy(images[i]).float() / 127.5 - 1.0
        expected = F.avg_pool2d(x, factor)  # the PoolEncoder's mean, channel 0 repeated
        assert batch["latent_mean"].shape == (len(i), 4, 16 // factor, 16 // factor)
        assert torch.allclose(batch["latent_mean"][:, :1], expected, atol=1e-6)
        assert torch.allclose(batch["latent_mean"][:, 3:], expected, atol=1e-6)
        assert torch.all(batch["latent_logvar"] == -6.0)
        np.testing.assert_array_equal(batch["label"].numpy(), labels[i])


def test_encode_then_stream_latents(images_dataset, tmp_path):
    root, images, labels = images_dataset
    dest = str(tmp_path / "latents")
    manifest = encode_latent_shards(root, dest, PoolEncoder(factor=4, channels=4), batch_size=16, shards_per_task=3)
    assert manifest.kind == "latent" and manifest.num_samples == 60
    info = describe_shards(dest)
    assert info.kind == "latents" and info.latent_shape == (4, 4, 4) and info.image_shape == (1, 16, 16)
    batches = list(build_stream(dest, B, 0, 1, SEED, num_workers=2, epochs=1))
    assert len(batches) == 60 // B
    _check_latent_batches(batches, images, labels, 4)
    with pytest.raises(DataError, match="already holds"):
        encode_latent_shards(root, dest, PoolEncoder())


def test_encode_with_exported_vae_weights(images_dataset, tmp_path):
    from distdiff.models import build_model
    from distdiff.models.export import save_weights

    root, images, _ = images_dataset
    vae = build_model("vae", "tiny", in_channels=1).eval()
    save_weights(vae, tmp_path / "vae")
    dest = str(tmp_path / "vae-latents")
    encode_latent_shards(root, dest, VAEEncoder(tmp_path / "vae"), batch_size=32)
    batch = next(iter(build_stream(dest, B, 0, 1, SEED, epochs=1)))
    with torch.no_grad():
        x = torch.from_numpy(images[batch["index"].numpy()]).float() / 127.5 - 1.0
        mean, logvar = vae.encode(x)
    assert torch.allclose(batch["latent_mean"], mean, atol=1e-5)
    assert torch.allclose(batch["latent_logvar"], logvar, atol=1e-5)


def test_latent_shards_in_s3(images_dataset, s3_bucket):
    root, images, labels = images_dataset
    source, dest = f"s3://{s3_bucket}/images", f"s3://{s3_bucket}/latents"
    write_synthetic(source, 60, 8, channels=1, size=16)
    encode_latent_shards(source, dest, PoolEncoder(factor=2, channels=4))
    _check_latent_batches(list(build_stream(dest, B, 1, 2, SEED, num_workers=0, epochs=1)), images, labels, 2)


@pytest.mark.slow
def test_ray_encoding_writes_the_same_shards_as_local(images_dataset, tmp_path):
    from distdiff.launchers.ray_encode import encode_latents_with_ray

    root = images_dataset[0]
    local = encode_latent_shards(root, str(tmp_path / "local"), PoolEncoder())
    fanned = encode_latents_with_ray(root, str(tmp_path / "ray"), PoolEncoder(), shards_per_task=2, num_cpus_local=2)
    assert fanned.dataset_hash == local.dataset_hash  # byte-identical latent shards
