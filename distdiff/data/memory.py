"""An in-memory stream over arrays, with the same resumable-state protocol as the shard streams.

Used for the embedded MNIST and for tests: the whole dataset sits in RAM, so every rank can index
any sample and an exact, elastic resume is a single global cursor.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch


def uint8_to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """Map uint8 pixels 0..255 to float32 in [-1, 1]."""
    return images.to(torch.float32) / 127.5 - 1.0


class ArrayStream:
    """Endless batches from in-memory arrays, shuffled per epoch and split across ranks.

    The epoch's order is a permutation drawn from (seed, epoch). All ranks walk the same global
    order in steps of `world_size * batch_size`; rank r takes its slice of each global batch. The
    state is therefore (epoch, position within the epoch), identical on every rank, and it can be
    restored under another world size: the remaining samples of the epoch are simply cut into
    global batches of the new size. The tail of an epoch shorter than one global batch is skipped
    (and counted in `metrics()["skipped_tail_samples"]`). With `hflip`, each sample is mirrored with
    probability 1/2, drawn from (seed, epoch) like the order, so a resumed run flips the same samples.
    With `captions` (one per image) batches carry them as "txt".
    """

    def __init__(
        self,
        images: np.ndarray | torch.Tensor,
        labels: np.ndarray | torch.Tensor,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        hflip: bool = False,
        captions: Sequence[str] | None = None,
    ):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if captions is not None and len(captions) != len(images):
            raise ValueError(f"{len(images)} images but {len(captions)} captions")
        self.captions = list(captions) if captions is not None else None
        if len(images) < batch_size * world_size:
            raise ValueError(
                f"dataset of {len(images)} samples is smaller than one global batch "
                f"({world_size} ranks x {batch_size})"
            )
        self.images = torch.as_tensor(images)  # (N, C, H, W) uint8
        self.labels = torch.as_tensor(labels, dtype=torch.int64)  # (N,)
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.hflip = hflip
        self.epoch = 0
        self.position = 0  # global samples consumed in this epoch
        self.samples_seen = 0  # global samples consumed since the start of training
        self.skipped_tail_samples = 0

    def _epoch_order(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The epoch's permutation and which positions of it are mirrored (both from seed and epoch)."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.images), generator=g)
        if not self.hflip:
            return order, torch.zeros(len(order), dtype=torch.bool)
        return order, torch.rand(len(order), generator=g) < 0.5

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        order, flips = self._epoch_order(self.epoch)
        while True:
            global_batch = self.batch_size * self.world_size
            if self.position + global_batch > len(order):
                self.skipped_tail_samples += len(order) - self.position
                self.epoch, self.position = self.epoch + 1, 0
                order, flips = self._epoch_order(self.epoch)
                continue
            start = self.position + self.rank * self.batch_size
            index, flip = order[start : start + self.batch_size], flips[start : start + self.batch_size]
            self.position += global_batch
            self.samples_seen += global_batch
            images = self.images[index]  # (B, C, H, W) uint8
            if self.hflip:
                images = torch.where(flip[:, None, None, None], images.flip(-1), images)
            batch = {"image": uint8_to_unit_range(images), "label": self.labels[index]}
            if self.captions is not None:
                batch["txt"] = [self.captions[i] for i in index.tolist()]  # B strings
            yield batch

    def state_dict(self) -> dict:
        """The position after the last batch handed out, as plain data."""
        return {"kind": "array", "epoch": self.epoch, "position": self.position, "samples_seen": self.samples_seen}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a state saved by any rank of a run with any world size."""
        if state.get("kind") != "array":
            raise ValueError(f"not an in-memory stream state: {state!r}")
        self.epoch, self.position, self.samples_seen = state["epoch"], state["position"], state["samples_seen"]

    def metrics(self) -> dict:
        """Counters for the metrics log."""
        return {"skipped_tail_samples": self.skipped_tail_samples}

    def load_rank_states(self, states: list[dict]) -> None:
        """Restore from the states gathered from every rank at save time (any old world size)."""
        if any(s != states[0] for s in states):
            raise ValueError(f"in-memory stream states differ across ranks: {states}")
        self.load_state_dict(states[0])
