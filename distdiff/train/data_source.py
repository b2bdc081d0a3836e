"""Building the training stream named by `data.source` and describing what it yields."""

from __future__ import annotations

from dataclasses import dataclass

from distdiff.config import DataConfig
from distdiff.data.embedded import load_embedded_mnist, make_stacked_mnist
from distdiff.data.memory import ArrayStream


@dataclass(frozen=True)
class SourceInfo:
    """What a data source yields: image shape, classes, and whether it holds images or latents."""

    image_shape: tuple[int, int, int]  # (C, H, W) of the images (of the decoded images for latents)
    num_classes: int
    kind: str = "images"  # or "latents"
    latent_shape: tuple[int, int, int] | None = None


def _embedded_arrays(cfg: DataConfig, seed: int):
    images, labels = load_embedded_mnist()
    if cfg.source == "embedded-stacked-mnist":
        return make_stacked_mnist(images, labels, cfg.stacked_size, seed=seed)
    return images, labels


def describe_source(cfg: DataConfig) -> SourceInfo:
    """Shape, classes and kind of the data source, read without building a stream."""
    if cfg.source == "embedded-mnist":
        return SourceInfo((1, 32, 32), 10)
    if cfg.source == "embedded-stacked-mnist":
        return SourceInfo((3, 32, 32), 1000)
    from distdiff.data import describe_shards  # shard sources: the manifest says

    return describe_shards(cfg.source)


def build_source_stream(cfg: DataConfig, batch_size: int, rank: int, world_size: int, seed: int):
    """The stream of batches for one rank (embedded arrays in memory, or shards)."""
    if cfg.is_embedded:
        images, labels = _embedded_arrays(cfg, seed)
        return ArrayStream(images, labels, batch_size, rank=rank, world_size=world_size, seed=seed, hflip=cfg.hflip)
    from distdiff.data import build_stream

    return build_stream(cfg.source, batch_size=batch_size, rank=rank, world_size=world_size, seed=seed,
                        num_workers=cfg.num_workers, hflip=cfg.hflip)
