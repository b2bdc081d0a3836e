"""Reference (training-data) images for FID, read in disjoint parts by the workers.

A reference is one of:
- a shard dataset (folder or s3:// prefix with `manifest.json`, kind "image"): worker r reads the
  shards r, r + W, r + 2W, ...; a sample's dataset index is its shard's offset plus its position;
- an embedded dataset: `embedded-mnist`, or `embedded-stacked-mnist[:NUM[:SEED]]` (default 20000
  images, seed 0, the training stream's defaults);
- uint8 arrays in memory (tests, notebooks).
Each has a `key` that changes whenever the images do (the manifest's dataset hash for shards),
which goes into the statistics cache key.
"""

from __future__ import annotations

import hashlib
from typing import Iterator

import numpy as np
import torch

DEFAULT_STACKED_NUM, DEFAULT_STACKED_SEED = 20000, 0


class ReferenceDataError(ValueError):
    """The reference data is missing, empty, damaged or does not match the samples."""


def rank_batches_of(num: int, rank: int, world_size: int, batch_size: int) -> Iterator[range]:
    """The global index ranges of rank `rank`: batch j of range(num) goes to rank j mod world_size.

    Args:
        num: number of items.
        rank, world_size: this worker and the number of workers.
        batch_size: items per batch.

    Returns:
        iterator of ranges.
    """
    for j, start in enumerate(range(0, num, batch_size)):
        if j % world_size == rank:
            yield range(start, min(start + batch_size, num))


class ArrayReference:
    """Reference images held in memory.

    Args:
        images: uint8 (N, C, H, W).
        name: a description for messages and reports.
    """

    def __init__(self, images: np.ndarray, name: str = "arrays"):
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ReferenceDataError(
                f"reference {name}: expected uint8 (N, C, H, W) images, got {images.dtype} {images.shape}")
        self.images, self.name = images, name
        digest = hashlib.sha256(str(images.shape).encode())
        digest.update(np.ascontiguousarray(images).tobytes())
        self.key = digest.hexdigest()

    @property
    def num_images(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.images.shape[1:])

    def rank_batches(self, rank: int, world_size: int, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (global indices int64 (B,), uint8 images (B, C, H, W)) of this rank's share."""
        for idx in rank_batches_of(self.num_images, rank, world_size, batch_size):
            yield torch.arange(idx.start, idx.stop), torch.from_numpy(self.images[idx.start : idx.stop])


class ShardReference:
    """Reference images from a shard dataset; each worker reads whole shards.

    Args:
        root: folder or s3:// prefix holding `manifest.json`.
    """

    def __init__(self, root: str):
        from distdiff.data.manifest import read_manifest

        self.root, self.name = root, root
        try:
            self.manifest = read_manifest(root)
        except Exception as err:  # noqa: BLE001 - every failure here means "no usable reference"
            raise ReferenceDataError(f"reference dataset {root}: {err}") from err
        if self.manifest.kind != "image":
            raise ReferenceDataError(
                f"reference dataset {root} holds {self.manifest.kind}s; FID needs an image dataset "
                "(use the image shards the latents were made from)")
        self.key = self.manifest.dataset_hash
        meta = self.manifest.meta
        self.image_shape = (meta["channels"], meta["height"], meta["width"])

    @property
    def num_images(self) -> int:
        return self.manifest.num_samples

    def _shard_images(self, shard: int) -> np.ndarray:
        from distdiff.data import storage
        from distdiff.data.pipeline import decode_image, parse_tar

        info = self.manifest.shards[shard]
        url = storage.join(self.root, info.name)
        try:
            content, _ = storage.fetch(url)
        except Exception as err:  # noqa: BLE001
            raise ReferenceDataError(f"reference shard {url} unreadable: {err}") from err
        if hashlib.sha256(content).hexdigest() != info.sha256:
            raise ReferenceDataError(
                f"reference shard {url} fails its sha256 checksum: the dataset changed or is damaged")
        samples, error = parse_tar(content, url)
        if len(samples) < info.num_samples:
            raise ReferenceDataError(
                f"reference shard {url} has {len(samples)} of {info.num_samples} samples ({error})")
        try:
            return np.stack([decode_image(s, self.manifest.meta) for s in samples[: info.num_samples]])
        except Exception as err:  # noqa: BLE001
            raise ReferenceDataError(f"reference shard {url}: undecodable sample ({err})") from err

    def rank_batches(self, rank: int, world_size: int, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (global indices int64 (B,), uint8 images (B, C, H, W)) of this rank's shards."""
        offsets = self.manifest.shard_offsets()
        for shard in range(rank, len(self.manifest.shards), world_size):
            images = self._shard_images(shard)  # (n, C, H, W)
            for start in range(0, len(images), batch_size):
                chunk = images[start : start + batch_size]
                first = offsets[shard] + start
                yield torch.arange(first, first + len(chunk)), torch.from_numpy(chunk)


def _embedded(spec: str) -> ArrayReference:
    from distdiff.data.embedded import EMBEDDED_DATASETS

    name, *parts = spec.split(":")
    dataset = EMBEDDED_DATASETS[name]
    if dataset.fixed_size is not None:
        return ArrayReference(dataset.load(0, 0)[0], spec)
    try:
        num = int(parts[0]) if parts else DEFAULT_STACKED_NUM
        seed = int(parts[1]) if len(parts) > 1 else DEFAULT_STACKED_SEED
    except ValueError as err:
        raise ReferenceDataError(f"bad embedded reference {spec!r}; form: {name}[:NUM[:SEED]]") from err
    return ArrayReference(dataset.load(num, seed)[0], f"{name}:{num}:{seed}")


def open_reference(spec: str):
    """Open a reference given as a dataset folder/prefix or an embedded dataset name.

    Args:
        spec: see the module docstring.

    Returns:
        an `ArrayReference` or `ShardReference`.
    """
    from distdiff.data.embedded import EMBEDDED_DATASETS

    if spec in EMBEDDED_DATASETS or spec.split(":")[0] in EMBEDDED_DATASETS:
        return _embedded(spec)
    if spec.startswith("embedded-"):
        raise ReferenceDataError(
            f"unknown embedded reference {spec!r}; known: {', '.join(EMBEDDED_DATASETS)} (drawn ones take "
            ":NUM[:SEED])")
    return ShardReference(spec)
