"""A cache of reference statistics in a local folder or under an s3:// prefix.

Entries are keyed by (dataset key, extractor name, image resolution): a changed dataset (its
manifest hash), other weights or other preprocessing never reuse stale statistics. One `.npz` per
entry holds count, sum and sum of outer products (float64), the first dataset images' features for
precision/recall, and the mode histogram when there is one.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from distdiff.eval.stats import FeatureStats


@dataclass
class ReferenceStats:
    """Everything the evaluator needs from the reference data."""

    stats: FeatureStats
    pr_features: torch.Tensor | None  # (n, D) features of dataset images 0..n-1, or None
    mode_histogram: torch.Tensor | None  # float64 counts per digit mode (1000 Stacked MNIST, 10 MNIST), or None
    num_images: int


def cache_key(dataset_key: str, extractor_name: str, image_shape: tuple[int, int, int]) -> str:
    """A file-name-safe key of (dataset, extractor, resolution).

    Args:
        dataset_key: the dataset's content hash (manifest hash).
        extractor_name: the extractor's `name`.
        image_shape: (C, H, W) of the dataset images.

    Returns:
        the key.
    """
    c, h, w = image_shape
    raw = f"{dataset_key[:16]}-{extractor_name}-{c}x{h}x{w}"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", raw)


def _to_bytes(ref: ReferenceStats) -> bytes:
    arrays = {"count": np.int64(ref.stats.count), "total": ref.stats.total.numpy(),
              "outer": ref.stats.outer.numpy(), "num_images": np.int64(ref.num_images)}
    if ref.pr_features is not None:
        arrays["pr_features"] = ref.pr_features.numpy()
    if ref.mode_histogram is not None:
        arrays["mode_histogram"] = ref.mode_histogram.numpy()
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


def _from_bytes(data: bytes, where: str) -> ReferenceStats:
    try:
        with np.load(io.BytesIO(data)) as f:
            stats = FeatureStats(int(f["count"]), torch.from_numpy(f["total"]), torch.from_numpy(f["outer"]))
            pr = torch.from_numpy(f["pr_features"]) if "pr_features" in f.files else None
            modes = torch.from_numpy(f["mode_histogram"]) if "mode_histogram" in f.files else None
            return ReferenceStats(stats, pr, modes, int(f["num_images"]))
    except (KeyError, ValueError, OSError) as err:
        raise ValueError(f"damaged reference statistics {where}: {err}") from err


class StatsCache:
    """Reference statistics stored under `root` (folder or s3://bucket/prefix).

    Args:
        root: where the entries live.
    """

    def __init__(self, root: str | Path):
        self.root = str(root)

    def url(self, key: str) -> str:
        return self.root.rstrip("/") + f"/{key}.npz"

    def get(self, key: str) -> ReferenceStats | None:
        """The entry, or None when absent."""
        url = self.url(key)
        if url.startswith("s3://"):
            from distdiff.data import storage
            from distdiff.data.errors import ObjectNotFound

            try:
                return _from_bytes(storage.read_bytes(url), url)
            except ObjectNotFound:
                return None
        path = Path(url)
        return _from_bytes(path.read_bytes(), url) if path.is_file() else None

    def put(self, key: str, ref: ReferenceStats) -> str:
        """Store an entry (atomically for local folders); returns its URL."""
        url, data = self.url(key), _to_bytes(ref)
        if url.startswith("s3://"):
            from distdiff.data import storage

            storage.write_bytes(url, data)
            return url
        path = Path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        return url
