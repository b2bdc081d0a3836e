"""The dataset manifest: the list of shards with counts, sizes and checksums, written last.

A folder or prefix without `manifest.json` is not a dataset (yet): shard writers upload every
shard first and the manifest only once all uploads have succeeded.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from distdiff.data import storage
from distdiff.data.errors import DataError, ObjectNotFound

MANIFEST_NAME = "manifest.json"
FORMAT = "distdiff-shards"
VERSION = 1
KINDS = ("image", "latent", "seg")  # seg: image / mask pairs (`seg_shards`)


@dataclass
class ShardInfo:
    """One tar shard: its file name, sample count, byte size and sha256 of the bytes."""

    name: str
    num_samples: int
    bytes: int
    sha256: str


@dataclass
class Manifest:
    """What a dataset folder holds.

    `meta` describes the samples: for images `channels`, `height`, `width`, `num_classes` (and
    optionally `class_names`, `source`); for latents the latent `channels`, `height`, `width`,
    plus `image` (the source images' meta) and `encoder`.
    """

    kind: str
    shards: list[ShardInfo]
    meta: dict = field(default_factory=dict)
    dataset_hash: str = ""
    format: str = FORMAT
    version: int = VERSION

    @property
    def num_samples(self) -> int:
        return sum(s.num_samples for s in self.shards)

    @property
    def shard_counts(self) -> list[int]:
        return [s.num_samples for s in self.shards]

    def shard_offsets(self) -> list[int]:
        """Dataset index of each shard's first sample (manifest order)."""
        offsets, running = [], 0
        for s in self.shards:
            offsets.append(running)
            running += s.num_samples
        return offsets

    def to_json(self) -> str:
        data = asdict(self)
        data["num_samples"] = self.num_samples
        return json.dumps(data, indent=1, sort_keys=True)


def compute_dataset_hash(shards: list[ShardInfo]) -> str:
    """A hash over the shard names, counts and checksums: equal hashes mean the same samples in order."""
    h = hashlib.sha256()
    for s in shards:
        h.update(f"{s.name}\t{s.num_samples}\t{s.sha256}\n".encode())
    return h.hexdigest()


def manifest_url(root: str) -> str:
    return storage.join(root, MANIFEST_NAME)


def parse_manifest(text: str, where: str) -> Manifest:
    """Validate and build a Manifest from its JSON text; `where` names it in errors."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"manifest {where} is not valid JSON: {err}") from err
    if data.get("format") != FORMAT:
        raise DataError(f"{where} is not a distdiff shard manifest (format={data.get('format')!r})")
    if data.get("version") != VERSION:
        raise DataError(f"manifest {where} has version {data.get('version')}, this reader knows {VERSION}")
    if data.get("kind") not in KINDS:
        raise DataError(f"manifest {where}: kind must be one of {KINDS}, got {data.get('kind')!r}")
    try:
        shards = [ShardInfo(s["name"], int(s["num_samples"]), int(s["bytes"]), s["sha256"]) for s in data["shards"]]
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(f"manifest {where}: malformed shard entry ({err!r})") from err
    if not shards:
        raise DataError(f"manifest {where} lists no shards")
    manifest = Manifest(kind=data["kind"], shards=shards, meta=data.get("meta", {}),
                        dataset_hash=data.get("dataset_hash", ""))
    if manifest.dataset_hash != compute_dataset_hash(shards):
        raise DataError(f"manifest {where}: dataset_hash does not match its shard list (edited or truncated?)")
    for key in ("channels", "height", "width"):
        if not isinstance(manifest.meta.get(key), int):
            raise DataError(f"manifest {where}: meta.{key} missing or not an integer")
    return manifest


def read_manifest(root: str) -> Manifest:
    """Read and validate `root/manifest.json` (a folder or s3://bucket/prefix)."""
    url = manifest_url(root)
    try:
        text = storage.read_bytes(url).decode()
    except ObjectNotFound as err:
        raise ObjectNotFound(
            f"no {MANIFEST_NAME} at {url}: not a shard dataset, or its writing did not finish") from err
    return parse_manifest(text, url)


def write_manifest(root: str, manifest: Manifest) -> None:
    """Write the manifest (call only after every shard is in place)."""
    manifest.dataset_hash = compute_dataset_hash(manifest.shards)
    storage.write_bytes(manifest_url(root), manifest.to_json().encode())
