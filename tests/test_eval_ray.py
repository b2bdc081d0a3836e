"""One evaluation through a real local Ray cluster (2 actors, gloo), against the in-process result."""

from __future__ import annotations

import pytest
import torch

from distdiff.data.embedded import load_embedded_mnist
from distdiff.data.writer import ShardWriter, image_sample
from distdiff.eval.classifier import MnistClassifier, save_classifier
from distdiff.eval.evaluator import EvalSettings, evaluate_worker
from distdiff.eval.stats import local_reduce_sum
from distdiff.testing.toy import write_tiny_export


def _write_digit_shards(dest, n: int = 45, shard_size: int = 10):
    images, labels = load_embedded_mnist()
    meta = {"channels": 1, "height": 32, "width": 32, "num_classes": 10}
    with ShardWriter(str(dest), "image", meta, shard_size=shard_size) as writer:
        for i in range(n):
            writer.write(f"digit{i:05d}", image_sample(images[i * 97], int(labels[i * 97])))


@pytest.mark.slow
def test_ray_two_workers_equal_one_process_and_reuse_cached_reference(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    torch.manual_seed(0)
    save_classifier(MnistClassifier(width=8), tmp_path / "classifier")
    export = write_tiny_export(tmp_path / "export", image_shape=(1, 32, 32), space="pixel", ldm_steps=10)
    _write_digit_shards(tmp_path / "digits")  # 5 shards: the two workers read 3 and 2 of them

    def settings(out: str, cache: str | None) -> EvalSettings:
        return EvalSettings(checkpoint=str(export), reference=str(tmp_path / "digits"), num_samples=14,
                            batch_size=4, samplers=("ldm:ddim", "ddgan"), features="fd-mnist",
                            classifier=str(tmp_path / "classifier"), pr_count=10, grid_count=4,
                            stats_cache=cache, out=out)

    from distdiff.launchers.ray_eval import run_eval_ray

    on_ray = run_eval_ray(settings(str(tmp_path / "ray"), None), num_workers=2, num_cpus_local=2)
    assert on_ray["world_size"] == 2 and not on_ray["reference"]["cached"]
    assert on_ray["reference"]["num_images"] == 45
    assert len(list((tmp_path / "digits" / "refstats").glob("*.npz"))) == 1  # cached beside the dataset

    torch.set_num_threads(1)
    fresh = evaluate_worker(0, 1, local_reduce_sum, settings(str(tmp_path / "one"), str(tmp_path / "fresh")))
    reused = evaluate_worker(0, 1, local_reduce_sum, settings(str(tmp_path / "two"), None))
    assert not fresh["reference"]["cached"] and reused["reference"]["cached"]
    for r, f, c in zip(on_ray["models"], fresh["models"], reused["models"]):
        assert r["fd_mnist"] > 0
        assert abs(r["fd_mnist"] - f["fd_mnist"]) / f["fd_mnist"] < 1e-9
        assert abs(r["fd_mnist"] - c["fd_mnist"]) / c["fd_mnist"] < 1e-9
        assert (r["precision"], r["recall"]) == (f["precision"], f["recall"])
    assert (tmp_path / "ray" / "eval.json").is_file() and (tmp_path / "ray" / "samples_ldm-ddim2.png").is_file()
