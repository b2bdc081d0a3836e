"""Helpers shared by the data-plane tests: tiny synthetic shard datasets (images, segmentation pairs) and a
fresh-process reader."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

import distdiff
from distdiff.data.writer import ShardWriter, image_sample

REPO = Path(distdiff.__file__).resolve().parents[1]
CHILD = Path(__file__).with_name("data_resume_child.py")


def synthetic_images(n: int, channels: int = 1, size: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random uint8 images (n, C, size, size) and labels i % 10."""
    images = np.random.default_rng(seed).integers(0, 256, (n, channels, size, size), dtype=np.uint8)
    return images, np.arange(n, dtype=np.int64) % 10


def write_synthetic(dest: str, n: int = 203, shard_size: int = 16, channels: int = 1, size: int = 8,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Write a synthetic image shard dataset; returns the images and labels it holds."""
    images, labels = synthetic_images(n, channels, size, seed)
    meta = {"channels": channels, "height": size, "width": size, "num_classes": 10}
    with ShardWriter(dest, "image", meta, shard_size=shard_size) as writer:
        for i in range(n):
            writer.write(f"sample{i:06d}", image_sample(images[i], int(labels[i]), {"i": i}))
    return images, labels


def indices(batches) -> list[int]:
    """Dataset indices of every sample in the batches, in order."""
    return [i for batch in batches for i in batch["index"].tolist()]


def run_child(source: str, state, batch_size: int, world_size: int, ranks: list[int], seed: int,
              num_workers: int, tmp: Path) -> dict:
    """Restore `state` in a fresh Python process on `ranks` and read each to the end of epoch 1.

    Returns:
        {"indices": {rank: [...]}, "metrics": {rank: {...}}}.
    """
    state_file, out_file = tmp / "state.json", tmp / "out.json"
    state_file.write_text(json.dumps(state))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, str(CHILD), source, str(state_file), str(out_file), str(batch_size), str(world_size),
           ",".join(map(str, ranks)), str(seed), str(num_workers)]
    subprocess.run(cmd, check=True, env=env, timeout=120)
    result = json.loads(out_file.read_text())
    return {"indices": {int(k): v for k, v in result["indices"].items()},
            "metrics": {int(k): v for k, v in result["metrics"].items()}}


SEG_SIZES = {"a": (48, 60), "b": (52, 52), "c": (64, 50)}  # name -> (H, W): pairs may differ in size


def write_seg_pairs(folder: Path, channels: int = 3, num_classes: int = 3, seed: int = 0) -> dict[str, tuple]:
    """Image / mask pairs with bright squares of classes 1.. on a dark background; PNG and TIFF mixed."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True), (folder / "masks").mkdir()
    pairs = {}
    for n, (name, (h, w)) in enumerate(SEG_SIZES.items()):
        mask = np.zeros((h, w), np.uint8)
        for k in range(6):
            y, x = rng.integers(0, h - 12), rng.integers(0, w - 12)
            mask[y:y + 10, x:x + 10] = 1 + k % (num_classes - 1)
        image = np.where(mask[None] > 0, 200, 30).astype(np.uint8).repeat(channels, 0)
        image = (image + rng.integers(0, 20, size=image.shape)).astype(np.uint8)
        suffix = ".tif" if n == 1 else ".png"
        pixels = image[0] if channels == 1 else image.transpose(1, 2, 0)
        Image.fromarray(pixels).save(folder / "images" / f"{name}{suffix}")
        Image.fromarray(mask).save(folder / "masks" / f"{name}.png")
        pairs[name] = (image, mask)
    return pairs


def write_seg_shard_sets(tmp_path: Path, dest: str) -> tuple[str, str]:
    """Training and held-out RGB pair shards at dest (a folder or s3://bucket/prefix)."""
    from distdiff.make_shards import main as make_shards

    sets = []
    for split, seed in (("train", 0), ("test", 1)):
        write_seg_pairs(tmp_path / f"pairs-{split}", seed=seed)
        url = f"{dest}/{split}"
        assert make_shards(["seg", "--input", str(tmp_path / f"pairs-{split}"), "--dest", url, "--num-classes", "3",
                            "--channels", "3", "--shard-size", "2"]) == 0
        sets.append(url)
    return sets[0], sets[1]
