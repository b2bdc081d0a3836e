"""Latent shards: image shards encoded once by a trained VAE, so LDM and DDGAN training skip the encoder.

Latent shard i holds the samples of image shard i, in the same order and under the same keys:
`key.npy` = float32 (2, c, h, w) stacking the posterior mean and log-variance, and `key.cls` the
label (the key is the source image's key). Work is cut by shard, so any map function can run it: a plain
loop here, Ray tasks in `distdiff.launchers.ray_encode`.
"""

from __future__ import annotations

import hashlib
import warnings
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from distdiff.data import storage
from distdiff.data.errors import DataError, DataWarning
from distdiff.data.manifest import Manifest, ShardInfo, manifest_url, read_manifest, write_manifest
from distdiff.data.pipeline import decode_image
from distdiff.data.tario import parse_tar
from distdiff.data.writer import build_tar, latent_sample


class PoolEncoder:
    """A stand-in encoder for tests and benchmarks: mean = average-pooled image, logvar constant.

    Args:
        factor: spatial downsampling factor.
        channels: latent channels (image channels repeated cyclically).
        logvar: the constant log-variance.
    """

    def __init__(self, factor: int = 4, channels: int = 4, logvar: float = -6.0):
        self.factor, self.channels, self.logvar = factor, channels, logvar

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = F.avg_pool2d(images, self.factor)  # (B, C, H/f, W/f)
        picks = torch.arange(self.channels) % images.shape[1]
        mean = pooled[:, picks]  # (B, channels, H/f, W/f)
        return mean, torch.full_like(mean, self.logvar)

    def describe(self) -> dict:
        return {"type": "pool", "factor": self.factor, "channels": self.channels, "logvar": self.logvar}


def encode_shard(source: str, manifest: Manifest, index: int, dest: str, encoder, batch_size: int = 64) -> dict:
    """Encode image shard `index` of `source` into the latent shard of the same name under `dest`.

    Returns:
        {"index", "shard": ShardInfo fields, "latent_shape": [c, h, w], "skipped": bad samples}.
    """
    info = manifest.shards[index]
    content, _ = storage.fetch(storage.join(source, info.name))
    if hashlib.sha256(content).hexdigest() != info.sha256:
        raise DataError(f"shard {info.name} of {source} fails its sha256 checksum; not encoding it")
    samples, error = parse_tar(content, info.name)
    keys, images, labels, captions, skipped = [], [], [], [], 0
    for members in samples:
        try:
            image = decode_image(members, manifest.meta)  # (C, H, W) uint8
            label = int(members["cls"])
            caption = members["txt"].decode("utf-8") if "txt" in members else None
            images.append(image)
            labels.append(label)
            captions.append(caption)
            keys.append(members["__key__"])
        except Exception as err:  # noqa: BLE001 - a bad sample is left out of the latent shard
            skipped += 1
            warnings.warn(f"not encoding sample {members.get('__key__')} of {info.name}: {err}", DataWarning)
    if error or len(samples) != info.num_samples:
        warnings.warn(f"shard {info.name}: {len(samples)} of {info.num_samples} samples readable ({error})",
                      DataWarning)
        skipped += max(0, info.num_samples - len(samples))
    if not keys:
        raise DataError(f"shard {info.name} of {source} has no decodable sample")
    means, logvars = [], []
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(np.stack(images[start : start + batch_size])).float() / 127.5 - 1.0  # (b, C, H, W)
        mean, logvar = encoder(x)
        means.append(mean.float().cpu().numpy())
        logvars.append(logvar.float().cpu().numpy())
    mean, logvar = np.concatenate(means), np.concatenate(logvars)  # (n, c, h, w) each
    data = build_tar([(k, latent_sample(mean[i], logvar[i], labels[i], caption=captions[i]))
                      for i, k in enumerate(keys)])
    storage.write_bytes(storage.join(dest, info.name), data)
    shard = ShardInfo(info.name, len(keys), len(data), hashlib.sha256(data).hexdigest())
    return {"index": index, "shard": vars(shard), "latent_shape": list(mean.shape[1:]), "skipped": skipped}


def encode_shards(source: str, indices: list[int], dest: str, encoder, batch_size: int = 64) -> list[dict]:
    """Encode several shards with one encoder (one task of a parallel map)."""
    manifest = read_manifest(source)
    return [encode_shard(source, manifest, i, dest, encoder, batch_size) for i in indices]


def local_map(fn: Callable, chunks: list[list[int]]) -> list[list[dict]]:
    """Run encode tasks one after another in this process."""
    return [fn(chunk) for chunk in chunks]


def encode_latent_shards(source: str, dest: str, encoder, batch_size: int = 64, overwrite: bool = False,
                         shards_per_task: int = 4, map_fn: Callable | None = None) -> Manifest:
    """Encode every image shard of `source` into latent shards at `dest`; the manifest goes last.

    Args:
        source: image shard dataset (folder or s3://bucket/prefix).
        dest: where the latent shards go.
        encoder: a picklable callable images (B, C, H, W) in [-1, 1] -> (mean, logvar), with
            `describe()`; e.g. `VAEEncoder(weights)`.
        batch_size: images per encoder call.
        overwrite: replace a dataset already at `dest`.
        shards_per_task: shards per map task.
        map_fn: `map_fn(task, chunks) -> list of results`, where `task(chunk)` encodes a list of
            shard indices; default runs them here, `distdiff.launchers.ray_encode` fans out.

    Returns:
        The latent dataset's manifest.
    """
    manifest = read_manifest(source)
    if manifest.kind != "image":
        raise DataError(f"{source} holds {manifest.kind} shards; latent encoding needs image shards")
    if storage.exists(manifest_url(dest)):
        if not overwrite:
            raise DataError(f"{dest} already holds a dataset (manifest.json); pass overwrite to replace it")
        storage.delete(manifest_url(dest))
    indices = list(range(len(manifest.shards)))
    chunks = [indices[i : i + shards_per_task] for i in range(0, len(indices), shards_per_task)]
    task = _EncodeTask(source, dest, encoder, batch_size)
    results = sorted((r for chunk in (map_fn or local_map)(task, chunks) for r in chunk), key=lambda r: r["index"])
    shapes = {tuple(r["latent_shape"]) for r in results}
    if len(shapes) != 1:
        raise DataError(f"encoder produced different latent shapes across shards: {sorted(shapes)}")
    c, h, w = shapes.pop()
    meta = {"channels": c, "height": h, "width": w, "num_classes": manifest.meta.get("num_classes", 0),
            "image": manifest.meta, "encoder": encoder.describe(), "source_dataset_hash": manifest.dataset_hash,
            "skipped": sum(r["skipped"] for r in results)}
    if "captions" in manifest.meta:
        meta["captions"] = manifest.meta["captions"]
    latent = Manifest(kind="latent", shards=[ShardInfo(**r["shard"]) for r in results], meta=meta)
    write_manifest(dest, latent)
    return latent


class _EncodeTask:
    """A picklable `chunk -> results` closure over the job's settings."""

    def __init__(self, source: str, dest: str, encoder, batch_size: int):
        self.source, self.dest, self.encoder, self.batch_size = source, dest, encoder, batch_size

    def __call__(self, chunk: list[int]) -> list[dict]:
        return encode_shards(self.source, chunk, self.dest, self.encoder, self.batch_size)
