"""The evaluator gives the same numbers on 1 worker and on 2 gloo workers (real process group)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from distdiff.data.embedded import load_embedded_mnist
from distdiff.eval.classifier import MnistClassifier, save_classifier
from distdiff.eval.evaluator import EvalSettings, evaluate_worker
from distdiff.eval.multiproc import evaluate_multiprocess
from distdiff.eval.reference import ArrayReference
from distdiff.eval.stats import local_reduce_sum
from distdiff.testing.toy import write_tiny_export


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_dist")
    torch.manual_seed(0)
    save_classifier(MnistClassifier(width=8), root / "classifier")  # untrained: features are still features
    export = write_tiny_export(root / "export", image_shape=(1, 32, 32), space="latent", ldm_steps=10,
                               ddgan_steps=2)
    images, _ = load_embedded_mnist()
    return root, export, ArrayReference(images[:96], "mnist-96")


def _settings(root, export, out: str, cache: str) -> EvalSettings:
    return EvalSettings(
        checkpoint=str(export), num_samples=20, batch_size=4, seed=3, samplers=("ldm:ddim", "ddgan"),
        features="fd-mnist", classifier=str(root / "classifier"), pr_count=12, grid_count=9,
        stats_cache=cache, out=out,
    )


def test_two_gloo_workers_equal_one_worker(setup):
    root, export, reference = setup
    one = evaluate_worker(0, 1, local_reduce_sum, _settings(root, export, str(root / "out1"), str(root / "c1")),
                          reference=reference)
    two = evaluate_multiprocess(_settings(root, export, str(root / "out2"), str(root / "c2")), world_size=2,
                                reference=reference)
    assert one["world_size"] == 1 and two["world_size"] == 2
    assert not one["reference"]["cached"] and not two["reference"]["cached"]
    assert [r["key"] for r in one["models"]] == [r["key"] for r in two["models"]] == ["ldm-ddim2", "ddgan-2step"]
    for a, b in zip(one["models"], two["models"]):
        assert a["num_samples"] == b["num_samples"] == 20
        assert a["fd_mnist"] > 0
        assert abs(a["fd_mnist"] - b["fd_mnist"]) / a["fd_mnist"] < 1e-9
        assert abs(a["fd_mnist_torchmetrics"] - a["fd_mnist"]) / a["fd_mnist"] < 1e-6
        assert (a["precision"], a["recall"]) == (b["precision"], b["recall"])
        assert "fid" not in a  # a classifier's features are never reported as FID
    # The gathered sample grids are byte-identical PNGs.
    for key in ("ldm-ddim2", "ddgan-2step"):
        png = f"samples_{key}.png"
        assert (root / "out1" / png).read_bytes() == (root / "out2" / png).read_bytes()
    written = json.loads((root / "out2" / "eval.json").read_text())
    assert written["models"][0]["fd_mnist"] == two["models"][0]["fd_mnist"]
    table = (root / "out2" / "eval.md").read_text()
    assert "| Model | FD-MNIST↓ | Recall↑ | NFE↓ | Time (s/img)↓ |" in table and "FID" not in table


def test_reference_statistics_are_cached_and_reused(setup):
    root, export, reference = setup
    settings = _settings(root, export, str(root / "out3"), str(root / "c3"))
    settings.models = ("ddgan",)
    first = evaluate_worker(0, 1, local_reduce_sum, settings, reference=reference)
    cached = list((root / "c3").glob("*.npz"))
    assert len(cached) == 1 and reference.key[:16] in cached[0].name and "mnist-classifier" in cached[0].name
    second = evaluate_worker(0, 1, local_reduce_sum, settings, reference=reference)
    assert not first["reference"]["cached"] and second["reference"]["cached"]
    assert second["models"][0]["fd_mnist"] == first["models"][0]["fd_mnist"]
    assert second["models"][0]["recall"] == first["models"][0]["recall"]


def _png(path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path)).astype(np.int64)


def test_samples_depend_on_seed_not_on_split(setup):
    root, export, reference = setup
    base = _settings(root, export, str(root / "out4"), str(root / "c4"))
    base.models, base.batch_size, base.grid_count = ("ldm", "ddgan"), 3, 20
    a = evaluate_worker(0, 1, local_reduce_sum, base, reference=reference)
    base.batch_size, base.out = 7, str(root / "out5")
    evaluate_worker(0, 1, local_reduce_sum, base, reference=reference)
    base.seed, base.out = 4, str(root / "out6")
    c = evaluate_worker(0, 1, local_reduce_sum, base, reference=reference)
    for key in ("ldm-ddim2", "ddgan-2step"):
        grid_a, grid_b, grid_c = (_png(root / out / f"samples_{key}.png") for out in ("out4", "out5", "out6"))
        # Other batches, same images: only float rounding of batched kernels (~1e-6) may flip a pixel by 1.
        diff = np.abs(grid_a - grid_b)
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
        assert (grid_a != grid_c).mean() > 0.1  # another seed, other images
    for ra, rc in zip(a["models"], c["models"]):
        assert rc["fd_mnist"] != ra["fd_mnist"] and np.isfinite(rc["fd_mnist"])
