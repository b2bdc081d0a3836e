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
    sampler = TileSampler(canvases.images, canvases.masks, tile_input=48, margin=20, flips=True)
    batch = sampler.sample(16, np.random.default_rng(0))
    assert batch["image"].shape == (16, 1, 48, 48) and batch["mask"].shape == (16, 48, 48)
    # The canvases' rule holds in every tile, mirrored context and flips included.
    assert np.array_equal(batch["mask"] > 0, batch["image"][:, 0] >= 96)
    with pytest.raises(ValueError, match="larger than the smallest image side 64"):
        TileSampler(canvases.images, canvases.masks, tile_input=48 + 64, margin=20)


def test_tiles_of_images_of_different_sizes_and_colours_stay_inside_each_image():
    rng = np.random.default_rng(0)
    sizes = [(40, 90), (70, 36)]
    images = [rng.integers(0, 256, size=(3, h, w), dtype=np.uint8) for h, w in sizes]
    masks = [(i[0] > 127).astype(np.uint8) for i in images]
    sampler = TileSampler(images, masks, tile_input=36, margin=10, flips=True, elastic_std=0.0)
    batch = sampler.sample(32, rng)
    assert batch["image"].shape == (32, 3, 36, 36) and batch["mask"].shape == (32, 36, 36)
    assert np.array_equal(batch["mask"] > 0, batch["image"][:, 0] > 127)
    # The output window (the tile minus its margin) is always real pixels of one image.
    centre = batch["image"][:, :, 10:26, 10:26]
    for tile in centre:
        assert any(_contains(image, tile) for image in images)


def _contains(image: np.ndarray, window: np.ndarray) -> bool:
    """Whether `window` (C, k, k) equals some window of `image` (C, H, W), flipped or not."""
    k = window.shape[-1]
    views = np.lib.stride_tricks.sliding_window_view(image, (k, k), axis=(1, 2))  # (C, H-k+1, W-k+1, k, k)
    for flipped in (window, window[..., ::-1, :], window[..., ::-1], window[..., ::-1, ::-1]):
        if (views == flipped[:, None, None]).all(axis=(0, 3, 4)).any():
            return True
    return False


def test_a_few_steps_on_one_batch_lower_the_loss():
    torch.manual_seed(0)
    net = build_model("seg_unet", "tiny")
    engines = EngineSet({"seg": TorchEngine(net, OptimConfig(lr=3e-3), "adam")})
    canvases = make_digit_canvases(2, side=64, digits=(3, 5), seed=0)
    sampler = TileSampler(canvases.images, canvases.masks, tile_input=52, margin=net.margin, flips=False)
    raw = sampler.sample(8, np.random.default_rng(1))
    batch = {"image": torch.from_numpy(raw["image"]).float() / 127.5 - 1, "mask": torch.from_numpy(raw["mask"])}
    task = SegTask()
    first = task.step(batch, engines, 0)
    for step in range(1, 30):
        last = task.step(batch, engines, step)
    assert last["seg/loss"] < 0.5 * first["seg/loss"]
    assert 0.0 <= last["seg/pixel_accuracy"] <= 1.0


ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
TINY = ["seg.preset=tiny", "seg.train_canvases=4", "seg.test_canvases=2", "seg.canvas_side=64", "seg.tile_output=8",
        "stage_seg.batch_size=2", "stage_seg.checkpoint_every=4", "stage_seg.sample_every=4", "stage_seg.log_every=2"]


def test_train_seg_locally_exports_scores_and_resumes(tmp_path):
    import json

    from distdiff.cli import main
    from distdiff.models import load_weights

    config = str(ROOT / "configs" / "seg-mnist-canvas.yaml")
    args = ["train-seg", "--config", config, "--local", f"output_dir={tmp_path}", *TINY]
    assert main([*args, "stage_seg.steps=4"]) == 0
    stage = tmp_path / "seg-mnist-canvas" / "seg"
    scores = json.loads((stage / "heldout.json").read_text())
    assert 0.0 <= scores["seg/heldout_mean_iou"] <= 1.0 and scores["images"] == 2
    assert (stage / "samples" / "overlay-step00000004.png").is_file()
    net, _ = load_weights(stage / "export" / "seg_unet")
    assert net.num_classes == 11
    assert main([*args, "stage_seg.steps=8"]) == 0  # resumes from step 4
    steps = [json.loads(line)["step"] for line in (stage / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 8 and steps == sorted(steps)


def test_seg_config_errors_name_the_key(tmp_path, capsys):
    from distdiff.cli import main

    config = str(ROOT / "configs" / "seg-mnist-canvas.yaml")
    assert main(["train-seg", "--config", config, "--dry-run"]) == 0
    assert main(["train-seg", "--config", config, "--dry-run", "seg.preset=huge"]) == 2
    assert "seg.preset: unknown seg_unet preset 'huge'" in capsys.readouterr().err
    assert main(["train-seg", "--config", config, "--dry-run", "seg.canvas_side=64", "seg.tile_output=70"]) == 2
    assert "seg.tile_output 70 (a valid output of 76) does not fit seg.canvas_side 64" in capsys.readouterr().err
    assert main(["train-seg", "--config", config, "--dry-run", "seg.digits=[3,2]"]) == 2


def test_segment_command_writes_the_mask_of_an_image_of_any_size(tmp_path, capsys):
    from PIL import Image

    from distdiff.models import save_weights
    from distdiff.models.seg_tiling import segment_overlap_tile
    from distdiff.segment import main

    torch.manual_seed(0)
    net = build_model("seg_unet", "tiny").eval()
    save_weights(net, tmp_path / "seg_unet")
    pixels = np.random.default_rng(0).integers(0, 256, size=(45, 70), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "big.png")
    args = ["--checkpoint", str(tmp_path / "seg_unet"), "--image", str(tmp_path / "big.png"),
            "--out", str(tmp_path / "mask.png"), "--overlay", str(tmp_path / "overlay.png"), "--tile", "12"]
    assert main(args) == 0
    mask = np.asarray(Image.open(tmp_path / "mask.png"))
    with torch.no_grad():
        expected = segment_overlap_tile(net, torch.from_numpy(pixels)[None, None].float() / 127.5 - 1, 12).argmax(1)[0]
    assert mask.shape == (45, 70) and np.array_equal(mask, expected.numpy())
    assert np.asarray(Image.open(tmp_path / "overlay.png")).shape == (45, 70, 3)
    assert main([*args[:2], "--canvas", "64", *args[4:]]) == 0  # a held-out digit canvas instead of an image
    assert np.asarray(Image.open(tmp_path / "canvas.png")).shape == (64, 64)
    assert "against the canvas's true mask: pixel accuracy" in capsys.readouterr().out
    save_weights(build_model("vae", "tiny"), tmp_path / "vae")
    assert main([*args[:1], str(tmp_path / "vae"), *args[2:]]) == 2
    assert "is a KLVAE, not a segmentation U-Net" in capsys.readouterr().err
    assert main([*args[:1], str(tmp_path / "missing"), *args[2:]]) == 2


def test_elastic_deformation_moves_image_and_mask_together():
    from distdiff.data.seg_augment import displacement_field, elastic_deform

    canvases = make_digit_canvases(1, side=64, digits=(4, 4), seed=3)
    tile = {"image": canvases.images[0, 0], "mask": canvases.masks[0]}
    assert elastic_deform(tile, np.zeros((2, 64, 64)))["image"].tolist() == tile["image"].tolist()  # no motion
    warped = elastic_deform(tile, displacement_field(64, np.random.default_rng(0), std=10.0))
    assert warped["mask"].dtype == np.uint8 and set(np.unique(warped["mask"])) <= set(np.unique(tile["mask"]))
    assert not np.array_equal(warped["image"], tile["image"])
    # Ink and labels still coincide: labelled pixels are mostly bright ones (cubic resampling blurs edges).
    inked = warped["image"][warped["mask"] > 0]
    assert (inked >= 64).mean() > 0.9


def test_overlap_tile_benchmark_runs_and_agrees_with_one_pass():
    from distdiff.bench.seg import run_benchmark

    result = run_benchmark("tiny", side=64, rounds=1, log=lambda *_: None)
    assert result["max_abs_difference"] < 1e-4 and result["tiles_s"] > 0 and result["one_pass_s"] > 0
