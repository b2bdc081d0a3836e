"""The epoch's sample order and its split over ranks and loader workers: pure functions, no I/O.

Positions. An epoch visits every sample of the dataset once, in a global order drawn from
(seed, epoch): the shards are permuted, then the samples inside each shard (the shard is the
shuffle buffer, so a reader never holds more than a shard or two). Position g of the epoch is
one sample; ranges of positions ("segments", half-open [start, end)) describe any subset.

Split. The positions still to visit are cut into `world_size` equal contiguous parts whose length
is a multiple of the batch size, so every rank yields the same number of full batches; the
remainder (fewer than world_size * batch_size samples) is skipped for this epoch and reported.
A rank's part is cut again into one contiguous piece per loader worker: batch j of the rank's
stream is made by worker j % K, so the count of batches handed out fixes every worker's position.

The permutations use a keyed 64-bit mix rather than a library RNG, so that a saved position
means the same samples under any numpy or torch version.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

Segment = tuple[int, int]
MASK64 = (1 << 64) - 1
SHARD_STREAM = 0x5EED5A4D  # separates the shard-permutation key from per-shard keys


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def key_hash(*parts: int) -> int:
    """Hash a tuple of non-negative integers to one 64-bit integer."""
    h = 0
    for part in parts:
        h = _splitmix64(h ^ (int(part) & MASK64))
    return h


def _splitmix64_array(x: np.ndarray) -> np.ndarray:
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def keyed_permutation(n: int, *key: int) -> np.ndarray:
    """A permutation of range(n) that depends only on `key`.

    Returns:
        int64 array (n,).
    """
    with np.errstate(over="ignore"):
        values = _splitmix64_array(np.arange(n, dtype=np.uint64) ^ np.uint64(key_hash(*key)))
    return np.argsort(values, kind="stable").astype(np.int64)


def keyed_uniform(positions: np.ndarray, *key: int) -> np.ndarray:
    """Deterministic floats in [0, 1), one per position, for augmentations that must resume exactly."""
    with np.errstate(over="ignore"):
        values = _splitmix64_array(positions.astype(np.uint64) ^ np.uint64(key_hash(*key)))
    return (values >> np.uint64(11)).astype(np.float64) / float(1 << 53)


class EpochOrder:
    """Maps the positions of one epoch to (shard, index inside the shard).

    Args:
        shard_counts: samples per shard, in manifest order.
        seed: the run's data seed.
        epoch: the epoch number.
    """

    def __init__(self, shard_counts: list[int], seed: int, epoch: int):
        self.shard_counts = [int(c) for c in shard_counts]
        self.seed, self.epoch = int(seed), int(epoch)
        self.shard_order = keyed_permutation(len(shard_counts), seed, epoch, SHARD_STREAM)  # (S,)
        counts = np.asarray(self.shard_counts, dtype=np.int64)[self.shard_order]
        self.starts = np.concatenate([[0], np.cumsum(counts)])  # (S + 1,) first position of each slot
        self.num_samples = int(self.starts[-1])

    def sample_order(self, shard: int) -> np.ndarray:
        """The order in which this epoch visits the samples of `shard` (indices into the shard)."""
        return shard_visit_order(self.shard_counts[shard], self.seed, self.epoch, shard)

    def runs(self, segment: Segment):
        """Split a segment at shard boundaries.

        Yields:
            (shard, first, end, position): positions [position, position + end - first) visit
            entries first..end-1 of `sample_order(shard)`.
        """
        start, end = segment
        slot = int(np.searchsorted(self.starts, start, side="right")) - 1
        while start < end:
            slot_end = int(self.starts[slot + 1])
            stop = min(end, slot_end)
            if stop > start:
                first = start - int(self.starts[slot])
                yield int(self.shard_order[slot]), first, first + stop - start, start
            start, slot = stop, slot + 1


@lru_cache(maxsize=64)
def shard_visit_order(count: int, seed: int, epoch: int, shard: int) -> np.ndarray:
    """The order in which epoch `epoch` visits the `count` samples of `shard` (int64 (count,))."""
    return keyed_permutation(count, seed, epoch, shard)


def normalize(segments) -> list[Segment]:
    """Sort segments, merge touching ones and drop empty ones."""
    out: list[list[int]] = []
    for start, end in sorted((int(a), int(b)) for a, b in segments):
        if end <= start:
            continue
        if out and start <= out[-1][1]:
            if start < out[-1][1]:
                raise ValueError(f"overlapping segments at position {start}")
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return [(a, b) for a, b in out]


def total(segments) -> int:
    """Number of positions covered by the segments."""
    return sum(int(b) - int(a) for a, b in segments)


def take(segments, start: int, count: int) -> list[Segment]:
    """Positions [start, start + count) of the segments' concatenation, as segments."""
    out: list[Segment] = []
    offset = 0
    for a, b in segments:
        a, b = int(a), int(b)
        lo = max(a, a + start - offset)
        hi = min(b, a + start + count - offset)
        if hi > lo:
            out.append((lo, hi))
        offset += b - a
        if offset >= start + count:
            break
    return out


def partition(segments, world_size: int, batch_size: int) -> tuple[list[list[Segment]], list[Segment]]:
    """Split the positions into equal contiguous parts of whole batches, one per rank.

    Returns:
        parts: world_size lists of segments, each covering the same multiple of batch_size.
        skipped: the remainder (fewer than world_size * batch_size positions).
    """
    n = total(segments)
    per_rank = n // (world_size * batch_size) * batch_size
    parts = [take(segments, r * per_rank, per_rank) for r in range(world_size)]
    return parts, take(segments, world_size * per_rank, n - world_size * per_rank)


def worker_batch_counts(num_batches: int, num_workers: int, offset: int) -> list[int]:
    """How many of batches offset..offset+num_batches-1 fall to each worker (batch j -> worker j % K)."""
    return [len(range((w - offset) % num_workers, num_batches, num_workers)) for w in range(num_workers)]


def worker_pieces(assignment, batch_size: int, num_workers: int, offset: int) -> list[list[Segment]]:
    """Cut a rank's assignment into one contiguous piece per worker, in worker order.

    Worker w makes the batches j with j % K == w; its m-th batch is piece[w][m*B:(m+1)*B].
    `offset` is the stream's batch counter (mod K) at the start of this assignment.
    """
    counts = worker_batch_counts(total(assignment) // batch_size, num_workers, offset)
    pieces, start = [], 0
    for count in counts:
        pieces.append(take(assignment, start, count * batch_size))
        start += count * batch_size
    return pieces


def compact(segments) -> list[Segment]:
    """Merge neighbouring segments that touch, keeping their order."""
    out: list[list[int]] = []
    for a, b in segments:
        if b <= a:
            continue
        if out and out[-1][1] == a:
            out[-1][1] = b
        else:
            out.append([int(a), int(b)])
    return [(a, b) for a, b in out]


def remaining_after(assignment, batch_size: int, num_workers: int, offset: int, batches: int) -> list[Segment]:
    """The positions of an assignment not yet handed out after `batches` batches, as a new assignment.

    The leftover of each worker's piece is placed so that a loader restarted with the same number of
    workers (batch counter 0) makes exactly the batches the uninterrupted stream would have made.
    """
    pieces = worker_pieces(assignment, batch_size, num_workers, offset)
    done = worker_batch_counts(batches, num_workers, offset)
    left: list[Segment] = []
    for new_worker in range(num_workers):
        # the worker that would have made the restarted stream's batch number `new_worker`
        old = (offset + batches + new_worker) % num_workers
        left += take(pieces[old], done[old] * batch_size, total(pieces[old]) - done[old] * batch_size)
    return compact(left)
