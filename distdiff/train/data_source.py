"""Building the training stream named by `data.source` and describing what it yields."""

from __future__ import annotations

from distdiff.config import DataConfig
from distdiff.data import DatasetInfo, build_stream, describe_shards
from distdiff.data.embedded import embedded_dataset


def describe_source(cfg: DataConfig) -> DatasetInfo:
    """Shape, classes and kind of the data source, read without building a stream."""
    if cfg.is_embedded:
        dataset = embedded_dataset(cfg.source)
        return DatasetInfo(dataset.image_shape, dataset.num_classes, captions=dataset.caption_record())
    return describe_shards(cfg.source)  # shard sources: the manifest says


def build_source_stream(cfg: DataConfig, batch_size: int, rank: int, world_size: int, seed: int):
    """The stream of batches for one rank (embedded arrays in memory, or shards)."""
    return build_stream(cfg.source, batch_size=batch_size, rank=rank, world_size=world_size, seed=seed,
                        num_workers=cfg.num_workers, hflip=cfg.hflip, stacked_size=cfg.stacked_size)
