"""Segmentation shards: users' image / mask pairs as WebDataset tars with an `image` and a `mask` member.

Each sample is `KEY.image.png` (the image, 1 or 3 channels), `KEY.mask.png` (one channel of class
indices, the image's size) and `KEY.json` (the pair's name). The manifest's kind is "seg"; its meta
holds `channels`, `num_classes` and the smallest and largest image sides (`height`, `width` are the
smallest, `max_height`, `max_width` the largest: pairs may differ in size).

Segmentation sets are small (the U-Net paper trained on 30 images), so training reads a whole set into
memory once and draws its tiles from there; reading checks every shard's checksum and every sample.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from distdiff.data import storage
from distdiff.data.errors import DataError
from distdiff.data.formats import sample_key
from distdiff.data.manifest import Manifest, read_manifest
from distdiff.data.seg_pairs import SegImages, open_image, seg_pairs
from distdiff.data.tario import parse_tar
from distdiff.data.writer import ShardWriter, encode_png

IMAGE_MEMBER, MASK_MEMBER = "image.png", "mask.png"
MAX_CLASSES = 256  # masks are stored as 8-bit PNGs


def write_seg_shards(path: str | Path, dest: str, num_classes: int, channels: int = 1, shard_size: int = 100,
                     overwrite: bool = False, limit: int | None = None) -> Manifest:
    """Convert a folder or zip of image / mask pairs (see `seg_pairs`) into segmentation shards.

    Raises:
        DataError: from `seg_pairs` (naming the file at fault) before any shard is complete, or for a
            class count a mask PNG cannot hold.
    """
    if not 2 <= num_classes <= MAX_CLASSES:
        raise DataError(f"num_classes must be in [2, {MAX_CLASSES}] (8-bit masks), got {num_classes}")
    sides = []
    meta = {"channels": channels, "num_classes": num_classes, "source": str(path)}
    with ShardWriter(dest, "seg", meta, shard_size, prefix="seg", overwrite=overwrite) as writer:
        for n, (name, image, mask) in enumerate(seg_pairs(path, num_classes, channels)):
            if limit is not None and n >= limit:
                break
            writer.write(sample_key(n, name), {IMAGE_MEMBER: encode_png(image), MASK_MEMBER: encode_png(mask[None]),
                                              "json": json.dumps({"name": name}).encode()})
            sides.append(mask.shape)
        heights, widths = [s[0] for s in sides], [s[1] for s in sides]
        writer.meta.update(height=min(heights), width=min(widths), max_height=max(heights), max_width=max(widths))
    return writer.manifest


def _sample(sample: dict, where: str, channels: int, num_classes: int) -> tuple[str, np.ndarray, np.ndarray]:
    missing = [m for m in (IMAGE_MEMBER, MASK_MEMBER) if m not in sample]
    if missing:
        raise DataError(f"{where}: no {' or '.join(missing)} member")
    image = np.asarray(open_image(sample[IMAGE_MEMBER], where))
    image = image[None] if image.ndim == 2 else image.transpose(2, 0, 1)  # (C, H, W)
    mask = np.asarray(open_image(sample[MASK_MEMBER], where))
    if image.shape[0] != channels:
        raise DataError(f"{where}: image has {image.shape[0]} channel(s), the manifest says {channels}")
    if mask.ndim != 2 or mask.shape != image.shape[1:]:
        raise DataError(f"{where}: mask {mask.shape} does not match its image {image.shape[1:]}")
    if mask.max() >= num_classes:
        raise DataError(f"{where}: class index {int(mask.max())} is outside [0, {num_classes})")
    name = json.loads(sample["json"]).get("name", sample["__key__"]) if "json" in sample else sample["__key__"]
    return name, np.array(image, copy=True), np.array(mask, copy=True)  # PIL's arrays are read-only


def read_seg_manifest(source: str) -> Manifest:
    """The manifest of a segmentation shard dataset.

    Raises:
        DataError: no readable manifest at `source`, or one of another kind of dataset.
    """
    manifest = read_manifest(source)
    if manifest.kind != "seg":
        raise DataError(f"{source} holds {manifest.kind} shards, not segmentation pairs "
                        f"(write them with `make_shards seg`)")
    return manifest


def read_seg_shards(source: str) -> SegImages:
    """Every pair of a segmentation shard dataset (a folder or s3://bucket/prefix), checked.

    Raises:
        DataError: naming the dataset, shard or sample at fault: another kind of dataset, a shard whose
            checksum differs from the manifest, a damaged tar, a sample without its image or mask, a mask
            of another size or with a class index outside the manifest's classes.
    """
    manifest = read_seg_manifest(source)
    channels, num_classes = int(manifest.meta["channels"]), int(manifest.meta.get("num_classes", 0))
    names, images, masks = [], [], []
    for shard in manifest.shards:
        url = storage.join(source, shard.name)
        data = storage.read_bytes(url)
        if hashlib.sha256(data).hexdigest() != shard.sha256:
            raise DataError(f"{url}: checksum differs from the manifest (damaged or replaced shard)")
        samples, error = parse_tar(data, url)
        if error:
            raise DataError(f"{url}: damaged tar ({error})")
        for sample in samples:
            name, image, mask = _sample(sample, f"{url} sample {sample['__key__']}", channels, num_classes)
            names.append(name), images.append(image), masks.append(mask)
    return SegImages(names, images, masks, num_classes)
