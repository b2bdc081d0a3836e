"""Streaming shards from a local folder: exact epochs, equal batch counts, elastic resume, bad data."""

import json
import warnings

import numpy as np
import pytest
import torch
from data_helpers import indices, run_child, write_synthetic

from distdiff.data import DataError, DataWarning, build_stream, merge_rank_states, preflight
from distdiff.data.manifest import read_manifest
from distdiff.data.writer import ShardWriter, image_sample

N, SHARD, B, SEED = 203, 16, 8, 11


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    images, labels = write_synthetic(str(root), N, SHARD)
    return str(root), images, labels


@pytest.mark.parametrize("workers", [0, 2])
def test_one_epoch_yields_every_sample_once_with_exact_pixels(dataset, workers):
    root, images, labels = dataset
    stream = build_stream(root, B, 0, 1, SEED, num_workers=workers, epochs=1)
    batches = list(stream)
    got = indices(batches)
    assert len(got) == len(set(got)) == N // B * B
    assert got != sorted(got)
    for batch in batches:
        assert batch["image"].dtype == torch.float32 and batch["image"].shape == (B, 1, 8, 8)
        i = batch["index"].numpy()
        pixels = np.rint((batch["image"].numpy() + 1) * 127.5).astype(np.uint8)
        np.testing.assert_array_equal(pixels, images[i])
        np.testing.assert_array_equal(batch["label"].numpy(), labels[i])
    assert stream.metrics()["remainder_skipped"] == N % B
    assert stream.samples_seen == N // B * B


def test_order_does_not_depend_on_worker_count_within_a_batch_set(dataset):
    root = dataset[0]
    a = set(indices(build_stream(root, B, 0, 1, SEED, num_workers=0, epochs=1)))
    b = set(indices(build_stream(root, B, 0, 1, SEED, num_workers=2, epochs=1)))
    c = set(indices(build_stream(root, B, 0, 1, SEED + 1, num_workers=0, epochs=1)))
    assert a == b
    assert len(c) == len(a)


def test_every_rank_gets_the_same_number_of_batches_and_ranks_are_disjoint(dataset):
    root = dataset[0]
    per_rank = [indices(build_stream(root, B, r, 3, SEED, num_workers=r % 2, epochs=2)) for r in range(3)]
    assert len({len(p) for p in per_rank}) == 1
    epoch0 = [p[: len(p) // 2] for p in per_rank]
    flat = [i for p in epoch0 for i in p]
    assert len(flat) == len(set(flat)) == N // (3 * B) * 3 * B


def test_endless_stream_crosses_epochs_and_reshuffles(dataset):
    root = dataset[0]
    stream = iter(build_stream(root, B, 0, 1, SEED))
    per_epoch = N // B
    got = [next(stream)["index"].tolist() for _ in range(2 * per_epoch + 1)]
    first, second = got[:per_epoch], got[per_epoch : 2 * per_epoch]
    assert sorted(sum(first, [])) != sum(first, []) and first != second
    assert len(set(sum(second, []))) == per_epoch * B


def _consume(stream, k):
    it = iter(stream)
    out = [next(it) for _ in range(k)]
    it.close()
    return indices(out)


def test_resume_in_a_fresh_process_continues_the_uninterrupted_epoch(dataset, tmp_path):
    root = dataset[0]
    reference = indices(build_stream(root, B, 0, 1, SEED, num_workers=2, epochs=1))
    stream = build_stream(root, B, 0, 1, SEED, num_workers=2, epochs=1)
    before = _consume(stream, 7)
    state = json.loads(json.dumps(stream.state_dict()))  # as stored in a checkpoint
    after = run_child(root, state, B, 1, [0], SEED, 2, tmp_path)["indices"][0]
    assert before + after == reference


@pytest.mark.parametrize("old,new", [(2, 1), (1, 2), (3, 2)])
def test_resume_on_another_world_size_loses_and_repeats_nothing(dataset, tmp_path, old, new):
    root = dataset[0]
    streams = [build_stream(root, B, r, old, SEED, num_workers=r % 2 * 2, epochs=1) for r in range(old)]
    before = [i for s in streams for i in _consume(s, 3)]
    merged = merge_rank_states([s.state_dict() for s in reversed(streams)])
    result = run_child(root, json.loads(json.dumps(merged)), B, new, list(range(new)), SEED, 1, tmp_path)
    after = [i for r in range(new) for i in result["indices"][r]]
    counts = {len(result["indices"][r]) for r in range(new)}
    assert len(counts) == 1  # equal batch counts after the re-split
    skipped = result["metrics"][0]["remainder_skipped"]
    assert skipped < new * B
    union = before + after
    assert len(union) == len(set(union))  # no sample twice
    assert len(union) + skipped == N  # and every other sample of the epoch visited
    assert result["metrics"][0]["samples_seen"] == len(union)


def test_resume_twice_in_process_and_with_own_rank_state(dataset):
    root = dataset[0]
    reference = indices(build_stream(root, B, 1, 2, SEED, num_workers=2, epochs=1))
    stream = build_stream(root, B, 1, 2, SEED, num_workers=2, epochs=1)
    part1 = _consume(stream, 3)
    part2 = _consume(stream, 2)  # a second iter() continues where the first stopped
    state = stream.state_dict()
    same = build_stream(root, B, 1, 2, SEED, num_workers=2, epochs=1)
    same.load_state_dict(state)  # own state, same world size: no merge needed
    assert part1 + part2 + indices(same) == reference  # same workers: the very same batches
    other = build_stream(root, B, 1, 2, SEED, num_workers=0, epochs=1)
    other.load_state_dict(state)
    rest = indices(other)
    assert sorted(part1 + part2 + rest) == sorted(reference) and len(rest) == len(reference) - 5 * B


def test_state_errors_are_clear(dataset, tmp_path):
    root = dataset[0]
    state = build_stream(root, B, 0, 2, SEED).state_dict()
    with pytest.raises(DataError, match="merge_rank_states"):
        build_stream(root, B, 1, 3, SEED).load_state_dict(state)
    with pytest.raises(DataError, match="seed"):
        build_stream(root, B, 0, 2, SEED + 1).load_state_dict(state)
    with pytest.raises(DataError, match="one state per rank"):
        merge_rank_states([state])
    other = tmp_path / "other"
    write_synthetic(str(other), N, SHARD, seed=5)
    with pytest.raises(DataError, match="dataset_hash"):
        build_stream(str(other), B, 0, 2, SEED).load_state_dict(state)


def test_preflight_reports_what_is_wrong(dataset, tmp_path):
    root = dataset[0]
    assert preflight(root, world_size=2, num_workers=2, batch_size=B).num_samples == N
    with pytest.raises(DataError, match="readers"):
        preflight(root, world_size=8, num_workers=2)
    with pytest.raises(DataError, match="global batch"):
        preflight(root, world_size=2, num_workers=0, batch_size=200)
    with pytest.raises(DataError, match="manifest.json"):
        preflight(str(tmp_path), 1, 0)
    broken = tmp_path / "broken"
    write_synthetic(str(broken), 40, 8)
    name = read_manifest(str(broken)).shards[2].name
    (broken / name).unlink()
    with pytest.raises(DataError, match=name):
        preflight(str(broken), 1, 0)


def test_half_written_dataset_has_no_manifest(tmp_path):
    dest = tmp_path / "half"
    with pytest.raises(RuntimeError):
        with ShardWriter(str(dest), "image", {"channels": 1, "height": 8, "width": 8}, shard_size=4) as writer:
            for i in range(10):
                writer.write(f"s{i}", image_sample(np.zeros((1, 8, 8), np.uint8), 0))
            raise RuntimeError("crash while writing")
    assert any(dest.glob("*.tar")) and not (dest / "manifest.json").exists()
    with pytest.raises(DataError, match="did not finish"):
        build_stream(str(dest), 2, 0, 1, 0)


def _bad_dataset(root):
    """10 shards x 16; shard 3 truncated on disk, shard 5 with an undecodable image and a sample lacking .cls."""
    images, labels = write_synthetic(str(root), 160, 16)
    manifest = read_manifest(str(root))
    truncated = root / manifest.shards[3].name
    truncated.write_bytes(truncated.read_bytes()[:3000])
    return manifest


def _rewrite_shard_with_bad_samples(root):
    # A valid tar (its checksum is right) whose samples are bad: written through the normal writer.
    images = np.random.default_rng(1).integers(0, 256, (16, 1, 8, 8), dtype=np.uint8)
    bad_root = root / "bad"
    with ShardWriter(str(bad_root), "image", {"channels": 1, "height": 8, "width": 8, "num_classes": 10},
                     shard_size=16) as writer:
        for i in range(16):
            members = image_sample(images[i], i % 10)
            if i == 4:
                members["png"] = b"not a png at all"
            if i == 9:
                del members["cls"]
            writer.write(f"odd{i:03d}", members)
    return bad_root


def test_bad_samples_are_counted_warned_and_filled(tmp_path):
    manifest = _bad_dataset(tmp_path)
    with pytest.warns(DataWarning) as record:
        stream = build_stream(str(tmp_path), B, 0, 1, SEED, epochs=1, max_bad_fraction=0.2)
        batches = list(stream)
    assert len(batches) == 160 // B and all(b["image"].shape[0] == B for b in batches)
    metrics = stream.metrics()
    assert metrics["bad_samples"] == metrics["bad_corrupt_shard"] == 16
    assert sum((b["index"] == -1).sum().item() for b in batches) == 16
    assert any(manifest.shards[3].name in str(w.message) for w in record)

    bad_root = _rewrite_shard_with_bad_samples(tmp_path)
    with pytest.warns(DataWarning) as record:
        stream = build_stream(str(bad_root), B, 0, 1, SEED, epochs=1, max_bad_fraction=0.2)
        list(stream)
    assert stream.metrics()["bad_undecodable"] == 1 and stream.metrics()["bad_missing_member"] == 1
    text = " ".join(str(w.message) for w in record)
    assert "odd004" in text and "odd009" in text and "shard-000000.tar" in text


def test_truncated_tar_without_checksums_keeps_the_readable_part(tmp_path):
    _bad_dataset(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        stream = build_stream(str(tmp_path), B, 0, 1, SEED, epochs=1, max_bad_fraction=0.2, verify_checksums=False)
        list(stream)
    assert 0 < stream.metrics()["bad_corrupt_shard"] < 16


def test_too_many_bad_samples_stop_the_run(tmp_path):
    _bad_dataset(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        with pytest.raises(DataError, match="max_bad_fraction"):
            list(build_stream(str(tmp_path), B, 0, 1, SEED, num_workers=2, epochs=1))


def test_load_rank_states_is_merge_then_load(dataset):
    root = dataset[0]
    streams = [build_stream(root, B, r, 2, SEED) for r in range(2)]
    for s in streams:
        _consume(s, 2)
    states = [s.state_dict() for s in streams]
    a, b = build_stream(root, B, 0, 1, SEED), build_stream(root, B, 0, 1, SEED)
    a.load_rank_states(states)
    b.load_state_dict(merge_rank_states(states))
    assert a.state_dict() == b.state_dict() and a.samples_seen == 4 * B


def test_flips_are_part_of_the_exact_resume(dataset):
    root, images, _ = dataset
    reference = list(build_stream(root, B, 0, 1, SEED, epochs=1, hflip=True))
    stream = build_stream(root, B, 0, 1, SEED, epochs=1, hflip=True)
    it = iter(stream)
    head = [next(it) for _ in range(5)]
    restored = build_stream(root, B, 0, 1, SEED, epochs=1, hflip=True)
    restored.load_state_dict(stream.state_dict())
    resumed = head + list(restored)
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(resumed, reference))
    flipped = 0
    for batch in reference:
        pixels = np.rint((batch["image"].numpy() + 1) * 127.5).astype(np.uint8)
        source = images[batch["index"].numpy()]
        same = (pixels == source).all(axis=(1, 2, 3))
        mirrored = (pixels == source[..., ::-1]).all(axis=(1, 2, 3))
        assert (same | mirrored).all()
        flipped += int(mirrored.sum())
    assert 0.3 < flipped / (len(reference) * B) < 0.7
