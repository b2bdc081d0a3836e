"""Writing WebDataset tar shards (`key.png` / `key.npy`, `key.cls`, `key.json`) and their manifest.

Each shard is built in memory (shards are small by design), hashed, and handed to a background
thread that writes it to the folder or uploads it to S3 (multipart), so encoding the next shard
overlaps the upload. The manifest goes last, after every shard has landed.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
from PIL import Image

from distdiff.data import storage
from distdiff.data.errors import DataError
from distdiff.data.manifest import KINDS, Manifest, ShardInfo, manifest_url, write_manifest
from distdiff.text import caption_record

KEY_PATTERN = re.compile(r"^[A-Za-z0-9_-]+$")  # no dots: webdataset splits the extension at the first dot


def encode_png(image: np.ndarray) -> bytes:
    """uint8 (C, H, W) with C in {1, 3} -> PNG bytes."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[0] not in (1, 3):
        raise DataError(f"expected a uint8 (C, H, W) image with C = 1 or 3, got {image.dtype} {image.shape}")
    pixels = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)  # (H, W) or (H, W, 3)
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(out, format="PNG", compress_level=1)
    return out.getvalue()


def encode_npy(array: np.ndarray) -> bytes:
    """An array in .npy format (no pickles)."""
    out = io.BytesIO()
    np.save(out, np.ascontiguousarray(array), allow_pickle=False)
    return out.getvalue()


def image_sample(image: np.ndarray, label: int, extra: dict | None = None, caption: str | None = None) -> dict[str, bytes]:
    """The tar members of one image sample: png, cls, json, and txt (the caption) when there is one."""
    members = {"png": encode_png(image), "cls": str(int(label)).encode(), "json": json.dumps(extra or {}).encode()}
    if caption is not None:
        members["txt"] = caption.encode("utf-8")
    return members


def latent_sample(mean: np.ndarray, logvar: np.ndarray, label: int, extra: dict | None = None,
                  caption: str | None = None) -> dict[str, bytes]:
    """The tar members of one latent sample: npy (2, c, h, w) float32 = [mean, logvar], cls (+ json if extra).

    The json member is optional here because a tar member costs at least 1 KiB (header + padding),
    as much as half of a small latent sample; the key already names the source image.
    """
    stacked = np.stack([mean, logvar]).astype(np.float32)  # (2, c, h, w)
    members = {"npy": encode_npy(stacked), "cls": str(int(label)).encode()}
    if extra:
        members["json"] = json.dumps(extra).encode()
    if caption is not None:
        members["txt"] = caption.encode("utf-8")  # the image's caption travels with its latent
    return members


def build_tar(samples: list[tuple[str, dict[str, bytes]]]) -> bytes:
    """A tar of the samples' members, with fixed metadata so equal samples give equal bytes."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for key, members in samples:
            for ext in sorted(members):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size, info.mode, info.mtime = len(members[ext]), 0o644, 0
                tar.addfile(info, io.BytesIO(members[ext]))
    return out.getvalue()


class ShardWriter:
    """Collects samples into tar shards at a folder or s3://bucket/prefix, manifest written last.

    Args:
        dest: a local folder or s3://bucket/prefix.
        kind: "image" or "latent".
        meta: the manifest's meta (channels, height, width, num_classes, ...).
        shard_size: samples per shard.
        prefix: shard file name prefix ("{prefix}-000000.tar").
        overwrite: replace an existing dataset at dest (its manifest is removed first, so a
            reader never sees the old manifest with new shards).
        upload_threads: shards written concurrently.

    Use as a context manager; `close()` (or a clean exit) writes the manifest and returns it.
    """

    def __init__(self, dest: str, kind: str, meta: dict, shard_size: int = 1000, prefix: str = "shard",
                 overwrite: bool = False, upload_threads: int = 4):
        if kind not in KINDS:
            raise DataError(f"kind must be one of {KINDS}, got {kind!r}")
        if shard_size < 1:
            raise DataError(f"shard_size must be >= 1, got {shard_size}")
        self.dest, self.kind, self.meta = dest, kind, dict(meta)
        self.shard_size, self.prefix = shard_size, prefix
        if storage.exists(manifest_url(dest)):
            if not overwrite:
                raise DataError(f"{dest} already holds a dataset (manifest.json); pass overwrite to replace it")
            storage.delete(manifest_url(dest))
        self._pending: list[tuple[str, dict[str, bytes]]] = []
        self._keys: set[str] = set()
        self._shards: list[ShardInfo] = []
        self._futures: list[Future] = []
        self._upload_threads = upload_threads
        self._pool = ThreadPoolExecutor(max_workers=upload_threads)
        self.manifest: Manifest | None = None

    def write(self, key: str, members: dict[str, bytes]) -> None:
        """Add one sample given its encoded members, e.g. `image_sample(...)`."""
        if not KEY_PATTERN.match(key):
            raise DataError(f"sample key {key!r} must match {KEY_PATTERN.pattern}")
        if key in self._keys:
            raise DataError(f"duplicate sample key {key!r}")
        self._keys.add(key)
        self._pending.append((key, members))
        if len(self._pending) >= self.shard_size:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        index, samples = len(self._shards), self._pending
        self._pending = []
        data = build_tar(samples)
        name = f"{self.prefix}-{index:06d}.tar"
        self._shards.append(ShardInfo(name, len(samples), len(data), hashlib.sha256(data).hexdigest()))
        # Raise failed uploads early, and bound memory to a few shards in flight.
        in_flight = []
        for future in self._futures:
            if future.done():
                future.result()
            else:
                in_flight.append(future)
        while len(in_flight) >= 2 * self._upload_threads:
            in_flight.pop(0).result()
        self._futures = in_flight
        self._futures.append(self._pool.submit(storage.write_bytes, storage.join(self.dest, name), data))

    def close(self) -> Manifest:
        """Flush, wait for every shard to land, then write and return the manifest."""
        if self.manifest is not None:
            return self.manifest
        self._flush()
        try:
            for future in self._futures:
                future.result()
        finally:
            self._pool.shutdown(wait=True)
        if not self._shards:
            raise DataError(f"no samples were written to {self.dest}")
        self.manifest = Manifest(kind=self.kind, shards=list(self._shards), meta=self.meta)
        write_manifest(self.dest, self.manifest)
        return self.manifest

    def abort(self) -> None:
        """Stop without writing a manifest (the partial shards are not a dataset)."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_image_shards(source, dest: str, shard_size: int = 1000, overwrite: bool = False,
                       limit: int | None = None) -> Manifest:
    """Write an `ImageSource` (see `distdiff.data.formats`) as image shards; returns the manifest.

    Args:
        source: the converted dataset.
        dest: folder or s3://bucket/prefix.
        shard_size: samples per shard.
        overwrite: replace a dataset already at dest.
        limit: write only the first `limit` samples.
    """
    meta = {**source.meta, "source": source.name}
    captions: set[str] = set()
    with ShardWriter(dest, "image", meta, shard_size, prefix=source.name, overwrite=overwrite) as writer:
        for n, (key, image, label, extra) in enumerate(source.samples()):
            if limit is not None and n >= limit:
                break
            caption = extra.pop("caption", None) if extra else None
            if caption is not None:
                captions.add(caption)
            writer.write(key, image_sample(image, label, extra, caption))
        if captions:  # the vocabulary of what was written, and the class prompts of a templated set
            writer.meta["captions"] = caption_record(sorted(captions), source.class_prompts or ())
    return writer.manifest
