"""What one loader worker runs: a visible list of stages from the epoch plan to batches.

    plan     -> the worker's runs of positions, epoch after epoch (shard list from the manifest,
                shuffled from (seed, epoch), split by rank, then by worker)
    fetch    -> shard bytes, a few shards ahead on a thread (local file or resumable S3 GET)
    parse    -> checksum, tar members grouped by key, one item per position in visiting order
    decode   -> PNG or .npy + .cls into arrays; bad samples marked, not raised
    augment  -> optional horizontal flip drawn from (seed, epoch, position)
    batch    -> `batch_size` items stacked into two tensors, bad slots filled, counters attached
                (the stream turns them into the batch dict with `unpack_batch`)

Every stage is a generator over the previous one, assembled with webdataset's `DataPipeline`.
"""

from __future__ import annotations

import hashlib
import io
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import groupby
from typing import Iterator

import numpy as np
import torch
import webdataset as wds
from PIL import Image

from distdiff.data import order, storage
from distdiff.data.errors import DataError, ObjectNotFound
from distdiff.data.manifest import Manifest
from distdiff.data.tario import load_npy, parse_tar

FLIP_STREAM = 0xF11B
MAX_MESSAGES = 16  # warnings carried per batch; the counters stay exact


@dataclass
class ReadConfig:
    """Everything a worker needs to read its share (plain data, so it pickles into workers)."""

    root: str
    manifest: Manifest
    seed: int
    batch_size: int
    verify_checksums: bool = True
    hflip: bool = False
    prefetch_shards: int = 2
    retry: storage.RetryPolicy = field(default_factory=storage.RetryPolicy)


@dataclass
class EpochPlan:
    """One epoch as seen by one rank: its positions, the positions no rank reads, the batch offset."""

    epoch: int
    assignment: list  # segments of positions this rank hands out this epoch
    skipped: list  # segments of the remainder that no rank reads this epoch
    offset: int  # the stream's batch counter mod num_workers when this epoch's first batch is made

    def num_batches(self, batch_size: int) -> int:
        return order.total(self.assignment) // batch_size


def plan_epochs(first: EpochPlan, num_samples: int, rank: int, world_size: int, batch_size: int,
                num_workers: int) -> Iterator[EpochPlan]:
    """The restored (or first) epoch, then fresh epochs, endlessly (callers apply any epoch limit)."""
    plan = first
    while True:
        yield plan
        parts, skipped = order.partition([(0, num_samples)], world_size, batch_size)
        offset = (plan.offset + plan.num_batches(batch_size)) % num_workers
        plan = EpochPlan(plan.epoch + 1, parts[rank], skipped, offset)


class MissingMember(DataError):
    """A sample lacks a member it needs (.png/.npy or .cls)."""


class Item:
    """One position of the epoch travelling through the stages; `problem` is (reason, text) or None."""

    __slots__ = ("epoch", "position", "shard", "index", "key", "members", "problem", "array", "label", "caption")

    def __init__(self, epoch: int, position: int, shard: int, index: int):
        self.epoch, self.position, self.shard, self.index = epoch, position, shard, index
        self.key, self.members, self.problem = "?", None, None
        self.array, self.label, self.caption = None, -1, None


def stage_plan(plans, cfg: ReadConfig, num_workers: int, worker: int):
    """Yield (epoch, shard, [(first, end, position), ...]) for this worker's piece of every epoch."""
    for plan in plans:
        piece = order.worker_pieces(plan.assignment, cfg.batch_size, num_workers, plan.offset)[worker]
        epoch_order = order.EpochOrder(cfg.manifest.shard_counts, cfg.seed, plan.epoch)
        runs = (run for segment in piece for run in epoch_order.runs(segment))
        for shard, group in groupby(runs, key=lambda run: run[0]):
            yield plan.epoch, shard, [run[1:] for run in group]


def stage_fetch(jobs, cfg: ReadConfig):
    """Attach the shard's bytes (or the read error), fetching `prefetch_shards` shards ahead."""
    def fetch(shard: int):
        url = storage.join(cfg.root, cfg.manifest.shards[shard].name)
        try:
            return storage.fetch(url, cfg.retry)
        except ObjectNotFound as err:
            return err, 0  # a missing shard is bad data, not an outage

    with ThreadPoolExecutor(max_workers=max(1, cfg.prefetch_shards)) as pool:
        queue = []
        for job in jobs:
            queue.append((job, pool.submit(fetch, job[1])))
            if len(queue) > cfg.prefetch_shards:
                head, future = queue.pop(0)
                yield head, future.result()
        for head, future in queue:
            yield head, future.result()


def _shard_samples(cfg: ReadConfig, shard: int, content) -> tuple[list[dict], str | None]:
    """The shard's samples in tar order, and what is wrong with the shard (None when whole)."""
    info = cfg.manifest.shards[shard]
    if isinstance(content, Exception):
        return [], f"shard {info.name} unreadable: {content}"
    if cfg.verify_checksums and hashlib.sha256(content).hexdigest() != info.sha256:
        return [], f"shard {info.name} fails its sha256 checksum ({len(content)} bytes, manifest says {info.bytes})"
    samples, error = parse_tar(content, info.name)
    if len(samples) < info.num_samples:
        return samples, f"shard {info.name} has {len(samples)} of {info.num_samples} samples ({error or 'truncated'})"
    return samples[: info.num_samples], None


def stage_parse(fetched_jobs, cfg: ReadConfig, stats: Counter, messages: list):
    """One Item per position, carrying the raw members of its sample (or a problem)."""
    for (epoch, shard, runs), (content, retries) in fetched_jobs:
        stats["retries"] += retries
        samples, shard_problem = _shard_samples(cfg, shard, content)
        if shard_problem:
            messages.append(shard_problem)
        visit = order.shard_visit_order(cfg.manifest.shards[shard].num_samples, cfg.seed, epoch, shard)
        for first, end, position in runs:
            for j in range(first, end):
                item = Item(epoch, position + j - first, shard, int(visit[j]))
                if item.index < len(samples):
                    item.members = samples[item.index]
                    item.key = item.members.get("__key__", "?")
                else:
                    item.problem = ("corrupt_shard", shard_problem)
                yield item


def decode_image(members: dict, meta: dict) -> np.ndarray:
    data = members.get("png") or members.get("jpg") or members.get("jpeg")
    if data is None:
        raise MissingMember("no .png member")
    with Image.open(io.BytesIO(data)) as img:
        img = img.convert("L" if meta["channels"] == 1 else "RGB")
        pixels = np.asarray(img, dtype=np.uint8)  # (H, W) or (H, W, 3)
    image = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)  # (C, H, W)
    if image.shape[1:] != (meta["height"], meta["width"]):
        raise DataError(f"image size {image.shape[1:]} differs from the manifest's {(meta['height'], meta['width'])}")
    return image


def decode_latent(members: dict, meta: dict) -> np.ndarray:
    if "npy" not in members:
        raise MissingMember("no .npy member")
    latent = load_npy(members["npy"])  # (2, c, h, w)
    expected = (2, meta["channels"], meta["height"], meta["width"])
    if latent.shape != expected:
        raise DataError(f"latent shape {latent.shape} differs from the manifest's {expected}")
    return latent.astype(np.float32, copy=False)


def stage_decode(items, cfg: ReadConfig):
    """Decode members into `item.array` and `item.label`; failures become `item.problem`."""
    decode = decode_image if cfg.manifest.kind == "image" else decode_latent
    meta = cfg.manifest.meta
    for item in items:
        if item.problem is None:
            try:
                if "cls" not in item.members:
                    raise MissingMember("no .cls member")
                item.label = int(item.members["cls"])
                item.array = decode(item.members, meta)
                if "txt" in item.members:
                    item.caption = item.members["txt"].decode("utf-8")
            except MissingMember as err:
                item.problem = ("missing_member", str(err))
            except Exception as err:  # noqa: BLE001 - any undecodable sample is skipped and counted
                item.problem = ("undecodable", f"{type(err).__name__}: {err}")
        item.members = None
        yield item


def stage_augment(items, cfg: ReadConfig):
    """Horizontal flips drawn from (seed, epoch, position), so a resumed run flips the same samples."""
    for item in items:
        if cfg.hflip and item.array is not None:
            if order.keyed_uniform(np.array([item.position]), cfg.seed, item.epoch, FLIP_STREAM)[0] < 0.5:
                item.array = np.ascontiguousarray(item.array[..., ::-1])
        yield item


def _blank(cfg: ReadConfig) -> Item:
    """A zero sample (label 0), the filler of last resort when no good sample has been read yet."""
    meta, item = cfg.manifest.meta, Item(-1, -1, 0, -1)
    if cfg.manifest.kind == "image":
        item.array = np.zeros((meta["channels"], meta["height"], meta["width"]), np.uint8)
    else:
        item.array = np.zeros((2, meta["channels"], meta["height"], meta["width"]), np.float32)
    item.label = 0
    return item


def _fill(items: list, last_good: list, cfg: ReadConfig) -> tuple[list, int]:
    """Replace bad items by good ones of this batch (else of the previous batch) so shapes stay fixed."""
    good = [it for it in items if it.problem is None] or last_good or [_blank(cfg)]
    filled = [it if it.problem is None else good[i % len(good)] for i, it in enumerate(items)]
    return filled, sum(it.problem is not None for it in items)


def stage_batch(items, cfg: ReadConfig, stats: Counter, messages: list):
    """Stack `batch_size` items; yields (data, [label, index] int64 (B, 2), info)."""
    last_good: list = []
    shard_names = [s.name for s in cfg.manifest.shards]
    offsets = cfg.manifest.shard_offsets()
    while True:
        chunk = [item for _, item in zip(range(cfg.batch_size), items)]
        if not chunk:
            return
        reasons = Counter(it.problem[0] for it in chunk if it.problem)
        for it in chunk:
            if it.problem and it.problem[0] != "corrupt_shard":  # shard problems were reported once
                messages.append(f"skipping sample {it.key} of shard {shard_names[it.shard]}: {it.problem[1]}")
        filled, bad = _fill(chunk, last_good, cfg)
        last_good = [it for it in filled if it.problem is None]
        index = [offsets[it.shard] + it.index if it.problem is None else -1 for it in chunk]
        # Two tensors per batch: each tensor crossing from a loader process costs a shared-memory
        # segment, which dominates for small latent batches.
        data = torch.from_numpy(np.stack([it.array for it in filled]))  # (B, C, H, W) uint8 | (B, 2, c, h, w)
        ints = torch.tensor([[it.label, i] for it, i in zip(filled, index)], dtype=torch.int64)  # (B, 2)
        info = {"bad": bad, "reasons": dict(reasons), "retries": stats.pop("retries", 0),
                "messages": messages[:MAX_MESSAGES]}
        if cfg.manifest.meta.get("captions"):  # strings travel beside the tensors, in the batch's info
            info["txt"] = [it.caption or "" for it in filled]
        messages.clear()
        yield data, ints, info


def unpack_batch(kind: str, data: torch.Tensor, ints: torch.Tensor, captions: list[str] | None = None) -> dict:
    """The batch dict handed to the trainer, from the two tensors a worker sends (and its captions)."""
    batch = {"label": ints[:, 0].contiguous(), "index": ints[:, 1].contiguous()}  # (B,) each; index -1 = filled
    if captions is not None:
        batch["txt"] = list(captions)  # B strings
    if kind == "image":
        batch["image"] = data.to(torch.float32) / 127.5 - 1.0  # (B, C, H, W) in [-1, 1]
    else:
        batch["latent_mean"], batch["latent_logvar"] = data[:, 0].contiguous(), data[:, 1].contiguous()
    return batch


def worker_pipeline(cfg: ReadConfig, plans, num_workers: int, worker: int) -> wds.DataPipeline:
    """The stages above, for worker `worker` of `num_workers`, over the epoch plans."""
    stats: Counter = Counter()
    messages: list[str] = []
    return wds.DataPipeline(
        lambda: stage_plan(plans, cfg, num_workers, worker),
        lambda jobs: stage_fetch(jobs, cfg),
        lambda fetched: stage_parse(fetched, cfg, stats, messages),
        lambda items: stage_decode(items, cfg),
        lambda items: stage_augment(items, cfg),
        lambda items: stage_batch(items, cfg, stats, messages),
    )
