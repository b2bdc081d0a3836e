"""The segmentation stage: the U-Net of Ronneberger et al. on the embedded digit canvases.

Training draws random tiles (with mirrored context) from the training canvases; the overlays and the
export use the EMA weights, segmenting whole held-out canvases with overlap-tile inference (the
launchers score the export on them with `distdiff.eval.seg_metrics`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from distdiff.config import RunConfig, dump_yaml
from distdiff.data.seg_canvas import NUM_SEG_CLASSES, Canvases, TileSampler, make_digit_canvases
from distdiff.data.seg_stream import SegTileStream
from distdiff.data.seg_weights import unet_weight_map
from distdiff.models import build_model, save_weights
from distdiff.models.seg_tiling import segment_classes
from distdiff.models.seg_unet import input_size_for
from distdiff.tasks.seg import SegTask
from distdiff.train.ema import EMA
from distdiff.train.engines import EngineSet
from distdiff.train.loop import StagePlan

SEG_EMA_DECAY = 0.999
OVERLAY_CANVASES = 4
# Class colours of the overlays: background transparent, then ten distinct hues (RGB in [0, 1]).
_PALETTE = torch.tensor([[0, 0, 0], [0.9, 0.1, 0.1], [0.1, 0.7, 0.1], [0.1, 0.3, 0.9], [0.9, 0.7, 0.1],
                         [0.7, 0.1, 0.8], [0.1, 0.8, 0.8], [0.9, 0.4, 0.1], [0.5, 0.8, 0.2], [0.4, 0.4, 0.9],
                         [0.9, 0.3, 0.6]])


def seg_canvases(cfg: RunConfig, split: str) -> Canvases:
    """The training ("train") or held-out ("test") canvases of the run."""
    num = cfg.seg.train_canvases if split == "train" else cfg.seg.test_canvases
    return make_digit_canvases(num, cfg.seg.canvas_side, tuple(cfg.seg.digits), split, cfg.seed)


def _weight_maps(cfg: RunConfig, canvases: Canvases) -> np.ndarray | None:
    if not cfg.seg.border_weights:
        return None
    return np.stack([unet_weight_map(m, i, NUM_SEG_CLASSES, cfg.seg.w0, cfg.seg.sigma)
                     for m, i in zip(canvases.masks, canvases.instances)])


def overlays(images: np.ndarray, classes: torch.Tensor) -> torch.Tensor:
    """RGB (N, 3, H, W) in [-1, 1]: the canvas in grey, each predicted digit class in its colour."""
    grey = torch.from_numpy(images).float().div(255.0).expand(-1, 3, -1, -1)  # (N, 3, H, W)
    colour = _PALETTE[classes].permute(0, 3, 1, 2)  # (N, 3, H, W)
    labelled = (classes > 0).unsqueeze(1)
    return torch.where(labelled, 0.35 * grey + 0.65 * colour, 0.6 * grey) * 2 - 1


def build_seg_plan(cfg: RunConfig, ctx, make_engine) -> StagePlan:
    """The segmentation stage: the U-Net, its EMA, the tile stream and held-out overlays."""
    torch.manual_seed(cfg.seed)
    net = build_model("seg_unet", cfg.seg.preset).to(ctx.device)
    train = seg_canvases(cfg, "train")
    sampler = TileSampler(train, input_size_for(cfg.seg.tile_output, net.depth), net.margin,
                          _weight_maps(cfg, train), cfg.seg.flips, cfg.seg.elastic_std)
    engines = EngineSet({"seg": make_engine("seg", net, cfg.seg.optim, "adam")})
    emas = {"seg": EMA(engines["seg"], SEG_EMA_DECAY)}
    shown = seg_canvases(cfg, "test").images[:OVERLAY_CANVASES]

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
