"""Datasets, shards, object storage and resumable streams.

Public entry points (imported lazily, so `import distdiff.data.memory` stays light):
`build_stream`, `preflight`, `merge_rank_states`, `describe_shards`, `ShardStream`, `DataError`,
`DataWarning`, `read_manifest`, `ShardWriter`, `write_image_shards`, `encode_latent_shards`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

_EXPORTS = {
    "build_stream": "distdiff.data.source",
    "preflight": "distdiff.data.source",
    "merge_rank_states": "distdiff.data.stream",
    "ShardStream": "distdiff.data.stream",
    "DataError": "distdiff.data.errors",
    "DataWarning": "distdiff.data.errors",
    "Manifest": "distdiff.data.manifest",
    "read_manifest": "distdiff.data.manifest",
    "ShardWriter": "distdiff.data.writer",
    "write_image_shards": "distdiff.data.writer",
    "encode_latent_shards": "distdiff.data.latents",
    "PoolEncoder": "distdiff.data.latents",
}

__all__ = sorted([*_EXPORTS, "DatasetInfo", "describe_shards"])


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'distdiff.data' has no attribute {name!r}")


@dataclass(frozen=True)
class DatasetInfo:
    """What a shard dataset yields (field names match the trainer's `SourceInfo`)."""

    image_shape: tuple[int, int, int]  # (C, H, W) of the images (the encoded images, for latents)
    num_classes: int
    kind: str = "images"  # or "latents"
    latent_shape: tuple[int, int, int] | None = None
    captions: dict | None = None  # the captions' record (`distdiff.text.caption_record`) when samples have them


def describe_shards(source: str) -> DatasetInfo:
    """Read a shard dataset's manifest and say what its batches hold."""
    from distdiff.data.manifest import read_manifest

    manifest = read_manifest(source)
    meta = manifest.meta
    shape = (meta["channels"], meta["height"], meta["width"])
    if manifest.kind == "image":
        return DatasetInfo(shape, int(meta.get("num_classes", 0)), captions=meta.get("captions"))
    image = meta.get("image", {})
    image_shape = (image.get("channels", 0), image.get("height", 0), image.get("width", 0))
    return DatasetInfo(image_shape, int(meta.get("num_classes", 0)), "latents", shape, meta.get("captions"))
