"""The segmentation task's training step, its scores and the tile sampler (CPU, tiny shapes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distdiff.data.seg_canvas import TileSampler, make_digit_canvases
from distdiff.eval.seg_metrics import confusion_matrix, mean_iou, pixel_accuracy
from distdiff.models import build_model
from distdiff.tasks.seg import SegTask
from distdiff.train.engines import EngineSet, TorchEngine
from distdiff.config import OptimConfig


def test_scores_from_a_confusion_matrix():
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 2, 0]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 2, 0, 0]])
    confusion = confusion_matrix(pred, target, 4)
    assert confusion.sum() == 8 and confusion[0, 0] == 2 and confusion[2, 0] == 1
    assert pixel_accuracy(confusion) == pytest.approx(6 / 8)
    # IoU: class 0 2/4, class 1 2/3, class 2 2/3; class 3 is absent from both and not averaged.
    assert mean_iou(confusion) == pytest.approx((2 / 4 + 2 / 3 + 2 / 3) / 3)


def test_tiles_keep_image_and_mask_aligned():
    canvases = make_digit_canvases(2, side=64, digits=(3, 5), seed=0)
    sampler = TileSampler(canvases, tile_input=48, margin=20, flips=True)
    batch = sampler.sample(16, np.random.default_rng(0))
    assert batch["image"].shape == (16, 1, 48, 48) and batch["mask"].shape == (16, 48, 48)
    # The canvases' rule holds in every tile, mirrored context and flips included.
    assert np.array_equal(batch["mask"] > 0, batch["image"][:, 0] >= 96)
    with pytest.raises(ValueError, match="larger than the canvas side"):
        TileSampler(canvases, tile_input=48 + 64, margin=20)


def test_a_few_steps_on_one_batch_lower_the_loss():
    torch.manual_seed(0)
    net = build_model("seg_unet", "tiny")
    engines = EngineSet({"seg": TorchEngine(net, OptimConfig(lr=3e-3), "adam")})
    canvases = make_digit_canvases(2, side=64, digits=(3, 5), seed=0)
    raw = TileSampler(canvases, tile_input=52, margin=net.margin, flips=False).sample(8, np.random.default_rng(1))
    batch = {"image": torch.from_numpy(raw["image"]).float() / 127.5 - 1, "mask": torch.from_numpy(raw["mask"])}
    task = SegTask()
    first = task.step(batch, engines, 0)
    for step in range(1, 30):
        last = task.step(batch, engines, step)
    assert last["seg/loss"] < 0.5 * first["seg/loss"]
    assert 0.0 <= last["seg/pixel_accuracy"] <= 1.0
