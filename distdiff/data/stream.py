"""Batches for one rank from a shard dataset, with an exact state that resumes on any world size.

How the trainer uses it:

    stream = build_stream(source, batch_size, rank, world_size, seed, num_workers)
    for batch in stream: ...                        # every rank gets the same number of batches
    # saving, on every rank at the same step:
    states = all_gather_object(stream.state_dict())  # list, one dict per rank, any order
    merged = merge_rank_states(states)               # plain JSON-able dict; store it in the checkpoint
    # restoring, in a new run with any number of ranks, before iterating:
    stream.load_state_dict(merged)                   # or stream.load_rank_states(states)

`load_state_dict` also takes a rank's own unmerged state when the world size, rank and batch size
are unchanged. The restored stream visits exactly the samples of the epoch that no rank had
handed out, re-split over the new ranks; the new remainder (fewer than world_size * batch_size
samples) is skipped for this epoch and counted in `metrics()["remainder_skipped"]`.
"""

from __future__ import annotations

import warnings
from collections import Counter
from itertools import takewhile

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from distdiff.data import order
from distdiff.data.errors import DataError, DataWarning
from distdiff.data.manifest import Manifest
from distdiff.data.pipeline import EpochPlan, ReadConfig, plan_epochs, unpack_batch, worker_pipeline

STATE_FORMAT = "distdiff-stream-state"
STATE_VERSION = 1


def _identity(x):
    return x


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # decoding is per-process; torch threads would only oversubscribe the cores


class _WorkerShare(IterableDataset):
    """The part of a rank's stream that one DataLoader worker makes (batch j by worker j % K)."""

    def __init__(self, cfg: ReadConfig, start: EpochPlan, rank: int, world_size: int, epochs: int | None):
        super().__init__()
        self.cfg, self.start, self.rank, self.world_size, self.epochs = cfg, start, rank, world_size, epochs

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        plans = _limited(plan_epochs(self.start, self.cfg.manifest.num_samples, self.rank, self.world_size,
                                     self.cfg.batch_size, workers), self.epochs)
        return iter(worker_pipeline(self.cfg, plans, workers, worker))


def _limited(plans, epochs: int | None):
    return plans if epochs is None else takewhile(lambda plan: plan.epoch < epochs, plans)


class ShardStream:
    """An iterable of batches for rank `rank` of `world_size`; see the module docstring.

    Batches: images {"image": float32 (B, C, H, W) in [-1, 1], "label": int64 (B,), "index": int64 (B,)}
    or latents {"latent_mean", "latent_logvar": float32 (B, c, h, w), "label", "index"}. `index` is the
    sample's position in the dataset (manifest order); -1 marks a slot refilled after a bad sample.
    """

    def __init__(self, root: str, manifest: Manifest, batch_size: int, rank: int, world_size: int, seed: int,
                 num_workers: int = 0, epochs: int | None = None, max_bad_fraction: float = 0.01,
                 hflip: bool = False, verify_checksums: bool = True, prefetch_shards: int = 2):
        if not 0 <= rank < world_size:
            raise DataError(f"rank {rank} is outside world size {world_size}")
        if batch_size < 1 or num_workers < 0:
            raise DataError(f"batch_size must be >= 1 and num_workers >= 0, got {batch_size}, {num_workers}")
        if manifest.num_samples < world_size * batch_size:
            raise DataError(f"{root} holds {manifest.num_samples} samples, fewer than one global batch "
                            f"({world_size} ranks x {batch_size})")
        self.root, self.manifest = root, manifest
        self.batch_size, self.rank, self.world_size, self.seed = batch_size, rank, world_size, seed
        self.num_workers, self.epochs, self.max_bad_fraction = num_workers, epochs, max_bad_fraction
        self._cfg = ReadConfig(root, manifest, seed, batch_size, verify_checksums, hflip, prefetch_shards)
        parts, skipped = order.partition([(0, manifest.num_samples)], world_size, batch_size)
        self._plan, self._batches = EpochPlan(0, parts[rank], skipped, 0), 0
        self._seen_base, self._seen_local = 0, 0  # global samples at the last restore; this rank's since
        self._counts: Counter = Counter()
        self._count_start = True  # count the first epoch's plan once, not on every re-iteration

    # ---- iteration -------------------------------------------------------------------------
    @property
    def _workers(self) -> int:
        return max(1, self.num_workers)

    @property
    def samples_seen(self) -> int:
        """Samples handed out by all ranks together since the run began (ranks step in lockstep)."""
        return self._seen_base + self.world_size * self._seen_local

    @property
    def epoch(self) -> int:
        return self._plan.epoch

    def _restart_plan(self) -> EpochPlan:
        plan = self._plan
        left = order.remaining_after(plan.assignment, self.batch_size, self._workers, plan.offset, self._batches)
        return EpochPlan(plan.epoch, left, plan.skipped, 0)

    def _source(self, start: EpochPlan):
        share = _WorkerShare(self._cfg, start, self.rank, self.world_size, self.epochs)
        if self.num_workers == 0:
            return iter(share)
        return iter(DataLoader(share, batch_size=None, num_workers=self.num_workers, collate_fn=_identity,
                               worker_init_fn=_worker_init, prefetch_factor=2))

    def _enter(self, plan: EpochPlan, count: bool = True) -> None:
        self._plan, self._batches = plan, 0
        if count:
            self._counts["planned"] += order.total(plan.assignment)
            self._counts["remainder_skipped"] += order.total(plan.skipped)

    def _next_nonempty(self, plans) -> bool:
        """Enter the next epoch that has batches; False once the epoch limit is reached."""
        while True:
            plan = next(plans)
            beyond = self.epochs is not None and plan.epoch >= self.epochs
            self._enter(plan, count=not beyond)  # the state still points at the unvisited epoch
            if beyond:
                return False
            if plan.num_batches(self.batch_size):
                return True

    def __iter__(self):
        start = self._restart_plan()
        plans = plan_epochs(start, self.manifest.num_samples, self.rank, self.world_size, self.batch_size,
                            self._workers)
        first = next(plans)
        self._enter(first, count=self._count_start)
        self._count_start = False
        if (self.epochs is not None and first.epoch >= self.epochs) or (
                not first.num_batches(self.batch_size) and not self._next_nonempty(plans)):
            return
        for data, ints, info in self._source(start):
            self._account(info)
            batch = unpack_batch(self.manifest.kind, data, ints, info.get("txt"))
            self._batches += 1
            self._seen_local += self.batch_size
            more = True
            if self._batches == self._plan.num_batches(self.batch_size):
                more = self._next_nonempty(plans)
            yield batch
            if not more:
                return

    def _account(self, info: dict) -> None:
        for message in info["messages"]:
            warnings.warn(message, DataWarning, stacklevel=3)
        self._counts["bad_samples"] += info["bad"]
        self._counts.update({f"bad_{reason}": n for reason, n in info["reasons"].items()})
        self._counts["retries"] += info["retries"]
        limit = self.max_bad_fraction * self._counts["planned"]
        if self._counts["bad_samples"] > limit:
            raise DataError(
                f"rank {self.rank}: {self._counts['bad_samples']} bad samples out of {self._counts['planned']} "
                f"planned exceed max_bad_fraction={self.max_bad_fraction:g} in {self.root} "
                f"({dict((k, v) for k, v in self._counts.items() if k.startswith('bad_'))}); "
                f"last problem: {info['messages'][-1] if info['messages'] else 'see warnings'}")

    def metrics(self) -> dict:
        """Counters for the metrics log (plain numbers)."""
        out = {"epoch": self._plan.epoch, "samples_seen": self.samples_seen, "bad_samples": 0,
               "remainder_skipped": 0, "retries": 0}
        out.update({k: v for k, v in self._counts.items() if k != "planned"})
        planned = self._counts["planned"]
        out["bad_fraction"] = out["bad_samples"] / planned if planned else 0.0
        return out

    # ---- state -----------------------------------------------------------------------------
    def _identity(self) -> dict:
        return {"format": STATE_FORMAT, "version": STATE_VERSION, "dataset_hash": self.manifest.dataset_hash,
                "num_samples": self.manifest.num_samples, "seed": self.seed}

    def state_dict(self) -> dict:
        """This rank's position right after the last batch handed out (prefetched batches do not count)."""
        plan = self._plan
        return {**self._identity(), "kind": "rank", "rank": self.rank, "world_size": self.world_size,
                "batch_size": self.batch_size, "num_workers": self._workers, "epoch": plan.epoch,
                "assignment": [list(s) for s in plan.assignment], "skipped": [list(s) for s in plan.skipped],
                "offset": plan.offset, "batches": self._batches,
                "samples_seen_base": self._seen_base, "samples_seen_local": self._seen_local}

    def _check_identity(self, state: dict) -> None:
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise DataError(f"not a shard-stream state: {str(state)[:200]}")
        if state.get("version") != STATE_VERSION:
            raise DataError(f"stream state version {state.get('version')} is not {STATE_VERSION}")
        mine = self._identity()
        for key in ("dataset_hash", "num_samples", "seed"):
            if state.get(key) != mine[key]:
                raise DataError(f"stream state has {key}={state.get(key)!r} but this stream has {mine[key]!r} "
                                f"({self.root}): the state belongs to another dataset or seed")

    def load_rank_states(self, states: list[dict]) -> None:
        """Restore from the states gathered from every rank at save time (any old world size)."""
        self.load_state_dict(merge_rank_states(states))

    def load_state_dict(self, state: dict | list) -> None:
        """Continue from a merged state (any world size), a list of rank states, or this rank's own state."""
        if isinstance(state, list):
            state = merge_rank_states(state)
        self._check_identity(state)
        if state.get("kind") == "rank":
            mine = (self.world_size, self.rank, self.batch_size)
            same = (state["world_size"], state["rank"], state["batch_size"]) == mine
            if not same and state["world_size"] != 1:
                raise DataError(f"a state of rank {state['rank']} of {state['world_size']} cannot be loaded on rank "
                                f"{self.rank} of {self.world_size}: pass merge_rank_states(all ranks' states)")
            if not same:
                state = merge_rank_states([state])
        if state["kind"] == "rank":
            left = order.remaining_after(state["assignment"], state["batch_size"], state["num_workers"],
                                         state["offset"], state["batches"])
            plan = EpochPlan(state["epoch"], left, [tuple(s) for s in state["skipped"]], 0)
            self._seen_base, self._seen_local = state["samples_seen_base"], state["samples_seen_local"]
        elif state["kind"] == "merged":
            parts, skipped = order.partition(state["remaining"], self.world_size, self.batch_size)
            plan = EpochPlan(state["epoch"], parts[self.rank], skipped, 0)
            self._seen_base, self._seen_local = state["samples_seen"], 0
        else:
            raise DataError(f"unknown stream state kind {state.get('kind')!r}")
        self._plan, self._batches = plan, 0
        self._count_start = True


def merge_rank_states(states: list[dict]) -> dict:
    """Combine every rank's `state_dict()` into one state that any rank of any world size can load.

    Args:
        states: one state per rank of the saving run (any order); a single merged state passes through.

    Returns:
        {"kind": "merged", "epoch", "remaining": segments not yet handed out, "samples_seen", ...}.
    """
    if not states:
        raise DataError("merge_rank_states needs at least one state")
    if len(states) == 1 and states[0].get("kind") in ("merged", "array"):
        return dict(states[0])
    if all(s.get("kind") == "array" for s in states):
        return dict(states[0])  # in-memory streams keep one global cursor, equal on every rank
    first = states[0]
    for s in states:
        if s.get("format") != STATE_FORMAT or s.get("kind") != "rank":
            raise DataError(f"merge_rank_states expects rank states from ShardStream.state_dict, got {str(s)[:200]}")
        for key in ("dataset_hash", "num_samples", "seed", "epoch", "world_size", "skipped", "samples_seen_base"):
            if s[key] != first[key]:
                raise DataError(
                    f"rank states disagree on {key} ({first[key]!r} vs {s[key]!r}): saved at different steps?")
    ranks = sorted(s["rank"] for s in states)
    if ranks != list(range(first["world_size"])):
        raise DataError(f"need exactly one state per rank 0..{first['world_size'] - 1}, got ranks {ranks}")
    left = [tuple(seg) for seg in first["skipped"]]
    for s in states:
        left += order.remaining_after(s["assignment"], s["batch_size"], s["num_workers"], s["offset"], s["batches"])
    try:
        remaining = order.normalize(left)
    except ValueError as err:
        raise DataError(f"rank states overlap ({err}): they do not come from one run") from err
    seen = first["samples_seen_base"] + sum(s["samples_seen_local"] for s in states)
    return {key: first[key] for key in ("format", "version", "dataset_hash", "num_samples", "seed", "epoch")} | {
        "kind": "merged", "remaining": [list(s) for s in remaining], "samples_seen": seen}
