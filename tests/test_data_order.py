"""The epoch order and its split over ranks and workers (pure functions, no I/O)."""

import numpy as np
import pytest

from distdiff.data import order


def positions(segments):
    return [p for a, b in segments for p in range(a, b)]


def test_keyed_permutation_is_a_permutation_and_depends_on_key():
    p = order.keyed_permutation(1000, 1, 2)
    assert sorted(p.tolist()) == list(range(1000))
    assert np.array_equal(p, order.keyed_permutation(1000, 1, 2))
    assert not np.array_equal(p, order.keyed_permutation(1000, 1, 3))


def test_epoch_order_visits_every_sample_once():
    counts = [5, 0, 7, 3, 9]
    epoch = order.EpochOrder(counts, seed=4, epoch=1)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    seen = []
    for shard, first, end, position in epoch.runs((0, sum(counts))):
        visit = epoch.sample_order(shard)
        seen += [int(offsets[shard] + visit[j]) for j in range(first, end)]
    assert sorted(seen) == list(range(sum(counts)))
    assert seen != sorted(seen)  # shuffled
    other = order.EpochOrder(counts, seed=4, epoch=2)
    assert not np.array_equal(epoch.shard_order, other.shard_order) or not np.array_equal(
        epoch.sample_order(2), other.sample_order(2))


def test_partition_gives_equal_whole_batches_and_a_small_remainder():
    segments = [(0, 10), (20, 57), (60, 61)]
    parts, skipped = order.partition(segments, world_size=3, batch_size=4)
    sizes = [order.total(p) for p in parts]
    assert len(set(sizes)) == 1 and sizes[0] % 4 == 0
    assert order.total(skipped) < 3 * 4
    assert sorted(positions([s for p in parts for s in p] + skipped)) == positions(segments)


@pytest.mark.parametrize("workers,offset,batches", [(1, 0, 3), (2, 0, 5), (3, 1, 4), (3, 2, 0), (2, 1, 9)])
def test_remaining_after_removes_exactly_the_batches_handed_out(workers, offset, batches):
    batch_size, assignment = 4, [(3, 19), (40, 60)]  # 36 positions = 9 batches
    pieces = order.worker_pieces(assignment, batch_size, workers, offset)
    # batch j (counted from the assignment's start) comes from worker (offset + j) % K, in piece order
    made, used = [], [0] * workers
    for j in range(batches):
        w = (offset + j) % workers
        made += positions(order.take(pieces[w], used[w] * batch_size, batch_size))
        used[w] += 1
    left = positions(order.remaining_after(assignment, batch_size, workers, offset, batches))
    assert len(made) == batches * batch_size
    assert sorted(made + left) == positions(assignment)
    assert not set(made) & set(left)


def test_normalize_rejects_overlap_and_merges_neighbours():
    assert order.normalize([(5, 7), (0, 5), (9, 9)]) == [(0, 7)]
    with pytest.raises(ValueError):
        order.normalize([(0, 5), (4, 6)])


def _batches(assignment, batch_size, workers, offset):
    """Every batch of an assignment in stream order (batch j by worker (offset + j) % K)."""
    pieces = order.worker_pieces(assignment, batch_size, workers, offset)
    used, out = [0] * workers, []
    for j in range(order.total(assignment) // batch_size):
        w = (offset + j) % workers
        out.append(positions(order.take(pieces[w], used[w] * batch_size, batch_size)))
        used[w] += 1
    return out


@pytest.mark.parametrize("workers,offset,batches", [(1, 0, 4), (2, 1, 3), (3, 2, 5), (3, 0, 9)])
def test_a_restarted_loader_continues_with_the_same_batches(workers, offset, batches):
    assignment = [(0, 20), (50, 66)]  # 36 positions, 9 batches of 4
    full = _batches(assignment, 4, workers, offset)
    left = order.remaining_after(assignment, 4, workers, offset, batches)
    assert _batches(left, 4, workers, 0) == full[batches:]
