"""The segmentation stage: the U-Net of Ronneberger et al. on the embedded digit canvases or on users'
segmentation shards (`seg.data`, `seg.test_data`).

Training draws random tiles (with mirrored context) from the training images; the overlays and the
export use the EMA weights, segmenting whole held-out images with overlap-tile inference (the
launchers score the export on them with `distdiff.eval.seg_metrics`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from distdiff.config import RunConfig, dump_yaml
from distdiff.data.seg_canvas import TileSampler, make_digit_canvases
from distdiff.data.seg_pairs import SegImages
from distdiff.data.seg_stream import SegTileStream
from distdiff.data.seg_weights import unet_weight_map
from distdiff.models import build_model, save_weights
from distdiff.models.seg_tiling import segment_classes
from distdiff.models.seg_unet import center_crop, input_size_for
from distdiff.tasks.seg import SegTask
from distdiff.train.ema import EMA
from distdiff.train.engines import EngineSet
from distdiff.train.loop import StagePlan

SEG_EMA_DECAY = 0.999
OVERLAY_IMAGES = 4
# Class colours of the overlays: background transparent, then ten distinct hues (RGB in [0, 1]).
_PALETTE = torch.tensor([[0, 0, 0], [0.9, 0.1, 0.1], [0.1, 0.7, 0.1], [0.1, 0.3, 0.9], [0.9, 0.7, 0.1],
                         [0.7, 0.1, 0.8], [0.1, 0.8, 0.8], [0.9, 0.4, 0.1], [0.5, 0.8, 0.2], [0.4, 0.4, 0.9],
                         [0.9, 0.3, 0.6]])


def seg_images(cfg: RunConfig, split: str) -> SegImages:
    """The training ("train") or held-out ("test") images of the run: `seg.data` / `seg.test_data` when set,
    else the embedded canvases."""
    if cfg.seg.data is not None:
        from distdiff.data.seg_shards import read_seg_shards

        return read_seg_shards(cfg.seg.data if split == "train" else cfg.seg.test_data)
    num = cfg.seg.train_canvases if split == "train" else cfg.seg.test_canvases
    return make_digit_canvases(num, cfg.seg.canvas_side, tuple(cfg.seg.digits), split, cfg.seed).as_seg_images()


def _weight_maps(cfg: RunConfig, data: SegImages) -> list[np.ndarray] | None:
    if not cfg.seg.border_weights:
        return None
    return [unet_weight_map(mask, instances, data.num_classes, cfg.seg.w0, cfg.seg.sigma)
            for mask, instances in zip(data.masks, data.instance_maps())]


def _common_crop(images: list[np.ndarray]) -> np.ndarray:
    """(N, C, h, w): the images centre-cropped to the smallest height and width among them."""
    h, w = min(i.shape[1] for i in images), min(i.shape[2] for i in images)
    return np.stack([center_crop(i, h, w) for i in images])  # slicing: works on arrays as on tensors


def overlays(images: np.ndarray, classes: torch.Tensor) -> torch.Tensor:
    """RGB (N, 3, H, W) in [-1, 1]: the image (N, C, H, W) in grey, each predicted class in its colour
    (the palette repeats past ten classes)."""
    grey = torch.from_numpy(images).float().div(255.0).mean(1, keepdim=True).expand(-1, 3, -1, -1)  # (N, 3, H, W)
    colour = _PALETTE[1 + (classes.long() - 1) % (len(_PALETTE) - 1)].permute(0, 3, 1, 2)  # (N, 3, H, W)
    labelled = (classes > 0).unsqueeze(1)
    return torch.where(labelled, 0.35 * grey + 0.65 * colour, 0.6 * grey) * 2 - 1


def build_seg_plan(cfg: RunConfig, ctx, make_engine) -> StagePlan:
    """The segmentation stage: the U-Net, its EMA, the tile stream and held-out overlays."""
    train = seg_images(cfg, "train")
    torch.manual_seed(cfg.seed)
    net = build_model("seg_unet", cfg.seg.preset, in_channels=train.channels, num_classes=train.num_classes)
    net = net.to(ctx.device)
    sampler = TileSampler(train.images, train.masks, input_size_for(cfg.seg.tile_output, net.depth), net.margin,
                          _weight_maps(cfg, train), cfg.seg.flips, cfg.seg.elastic_std)
    engines = EngineSet({"seg": make_engine("seg", net, cfg.seg.optim, "adam")})
    emas = {"seg": EMA(engines["seg"], SEG_EMA_DECAY)}
    shown = _common_crop(seg_images(cfg, "test").images[:OVERLAY_IMAGES])

    def sample_grids() -> dict[str, torch.Tensor]:
        return {"overlay": overlays(shown, segment_classes(emas["seg"].model, torch.from_numpy(shown)))}

    return StagePlan(
        name="seg", engines=engines, emas=emas, step_fn=SegTask().step,
        stream=SegTileStream(sampler, cfg.stage_seg.batch_size, ctx.rank, cfg.seed), stage=cfg.stage_seg,
        seed=cfg.seed, stage_dir=Path(cfg.output_dir) / cfg.name / "seg", precision=cfg.precision,
        config_yaml=dump_yaml(cfg), sample_fn=sample_grids, accumulation=cfg.distributed.gradient_accumulation_steps,
        export_names={"seg": "seg_unet"},
    )


def export_seg(plan: StagePlan) -> Path:
    """Write the EMA network (the one the overlays and the held-out scores use); returns its stem."""
    out = plan.stage_dir / "export"
    out.mkdir(parents=True, exist_ok=True)
    save_weights(plan.emas["seg"].model, out / "seg_unet", metadata={"ema_updates": plan.emas["seg"].num_updates})
    return out / "seg_unet"
