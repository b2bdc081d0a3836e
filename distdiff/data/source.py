"""Entry points for the trainer: `build_stream` and the `preflight` check run before any worker starts."""

from __future__ import annotations

from distdiff.data import storage
from distdiff.data.embedded import EMBEDDED_DATASETS
from distdiff.data.errors import DataError
from distdiff.data.manifest import MANIFEST_NAME, Manifest, read_manifest
from distdiff.data.stream import ShardStream


def _streamable(manifest: Manifest, source: str) -> Manifest:
    """The manifest of an image or latent dataset; segmentation pairs are read by `train-seg` instead."""
    if manifest.kind == "seg":
        raise DataError(f"{source} holds segmentation pairs (image + mask), which train the segmentation U-Net: "
                        f"pass it as seg.data to train-seg, not as data.source")
    return manifest


def build_stream(source: str, batch_size: int, rank: int, world_size: int, seed: int, num_workers: int = 0, *,
                 epochs: int | None = None, max_bad_fraction: float = 0.01, hflip: bool = False,
                 verify_checksums: bool = True, prefetch_shards: int = 2, stacked_size: int = 20000):
    """The batches of rank `rank`, from a shard dataset or an embedded one.

    Args:
        source: a folder or s3://bucket/prefix holding manifest.json, or "embedded-mnist" /
            "embedded-stacked-mnist" (in-memory `ArrayStream`, same state protocol).
        batch_size: samples per batch on this rank.
        rank, world_size: this rank and the number of ranks.
        seed: fixes the order of every epoch.
        num_workers: loader processes for this rank (0: read in this process).
        epochs: stop after this many epochs (None: endless).
        max_bad_fraction: stop with DataError when more than this fraction of the rank's planned
            samples was bad (corrupt shard, missing member, undecodable).
        hflip: random horizontal flips, drawn from (seed, epoch, position) so resumes repeat them.
        verify_checksums: skip shards whose sha256 differs from the manifest.
        prefetch_shards: shards read ahead by each reader.
        stacked_size: images drawn for embedded Stacked MNIST.

    Returns:
        A `ShardStream` (or `ArrayStream` for embedded sources).
    """
    if source in EMBEDDED_DATASETS:
        from distdiff.data.memory import ArrayStream

        dataset = EMBEDDED_DATASETS[source]
        images, labels = dataset.load(stacked_size, seed)
        return ArrayStream(images, labels, batch_size, rank, world_size, seed, hflip=hflip,
                           captions=dataset.captions(labels))
    manifest = _streamable(read_manifest(source), source)
    return ShardStream(source, manifest, batch_size, rank, world_size, seed, num_workers, epochs=epochs,
                       max_bad_fraction=max_bad_fraction, hflip=hflip, verify_checksums=verify_checksums,
                       prefetch_shards=prefetch_shards)


def preflight(source: str, world_size: int, num_workers: int, batch_size: int | None = None) -> Manifest | None:
    """Check, before any training worker starts, that the data can be streamed by this many readers.

    Checks that the manifest is readable (so the bucket, endpoint and credentials work), that every
    shard it lists exists with its recorded size, that there are at least as many shards as
    readers (world_size x max(1, num_workers)), and that one global batch fits in the dataset.

    Returns:
        The manifest (None for embedded sources).

    Raises:
        DataError: naming the source, shard or setting at fault.
    """
    if source in EMBEDDED_DATASETS:
        from distdiff.data.embedded import embedded_mnist_path

        try:
            embedded_mnist_path()
        except FileNotFoundError as err:
            raise DataError(str(err)) from err
        return None
    if source.startswith("embedded-"):
        raise DataError(f"unknown embedded dataset {source!r}; known: {', '.join(EMBEDDED_DATASETS)}")
    manifest = _streamable(read_manifest(source), source)
    sizes = storage.list_sizes(source)
    wrong = [f"{s.name} ({'missing' if s.name not in sizes else f'{sizes[s.name]} bytes, manifest {s.bytes}'})"
             for s in manifest.shards if sizes.get(s.name) != s.bytes]
    if wrong:
        raise DataError(f"{len(wrong)} shard(s) listed in {storage.join(source, MANIFEST_NAME)} are missing or "
                        f"changed: {', '.join(wrong[:5])}{' ...' if len(wrong) > 5 else ''}")
    readers = world_size * max(1, num_workers)
    if len(manifest.shards) < readers:
        raise DataError(
            f"{source} has {len(manifest.shards)} shards but {world_size} ranks x {max(1, num_workers)} loader "
            f"workers = {readers} readers; write the shards with a shard size <= "
            f"{max(1, manifest.num_samples // readers)} or use fewer workers")
    if batch_size is not None and manifest.num_samples < world_size * batch_size:
        raise DataError(f"{source} holds {manifest.num_samples} samples, fewer than one global batch "
                        f"({world_size} ranks x {batch_size})")
    return manifest
