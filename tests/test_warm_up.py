"""Sampler timing after a warm-up: the evaluator's untimed first call and the benchmark that shows why."""

from __future__ import annotations

import torch

from distdiff.eval.accumulate import generated_batches
from distdiff.eval.checkpoint import EvalCheckpoint
from distdiff.eval.sources import checkpoint_sources
from distdiff.testing.toy import write_tiny_export


class CountingSource:
    key, label, nfe, parameters, image_shape = "counting", "Counting", 1, None, (1, 4, 4)

    def __init__(self):
        self.calls = []

    def warm_up(self, batch_size: int) -> None:
        self.calls.append(("warm_up", batch_size))

    def generate(self, indices, seeds):
        self.calls.append(("generate", len(indices)))
        return torch.zeros(len(indices), *self.image_shape)


def test_the_evaluator_warms_a_source_up_once_untimed_before_its_batches():
    source = CountingSource()
    batches = list(generated_batches(source, num_samples=10, rank=0, world_size=1, batch_size=4, base_seed=0))
    assert [len(b[0]) for b in batches] == [4, 4, 2]
    assert source.calls == [("warm_up", 4), ("generate", 4), ("generate", 4), ("generate", 2)]


def test_every_model_kind_of_an_export_warms_up_and_still_samples(tmp_path):
    export = write_tiny_export(tmp_path / "export", space="latent", models=("ldm", "ddgan", "gan"))
    for source in checkpoint_sources(EvalCheckpoint(str(export)), "cpu"):
        source.warm_up(3)
        images = source.generate([0, 1, 2], [5, 6, 7])
        assert images.shape == (3, *source.image_shape) and torch.isfinite(images).all(), source.key


def test_evaluation_benchmark_times_each_sampler_cold_and_warm():
    from distdiff.bench.eval import run_benchmark

    results = run_benchmark(None, "cpu", batch_size=2, ddim_steps=2, repeats=1, features=False)
    assert set(results["samples_per_s"]) == {"ldm-ddim2", "ddgan-4step"}
    for rates in results["samples_per_s"].values():
        assert rates["first_call"] > 0 and rates["warm"] > 0
        assert rates["first_call_seconds_over_warm"] == rates["warm"] / rates["first_call"]
