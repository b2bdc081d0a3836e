"""Scoring a segmentation export on the run's held-out images (both launchers call it)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from distdiff.config import RunConfig
from distdiff.eval.seg_metrics import heldout_scores
from distdiff.models import load_weights
from distdiff.train.seg_stage import seg_images


def score_seg_export(cfg: RunConfig, stem: Path, device: torch.device, stage_dir: Path) -> dict:
    """Pixel accuracy and mean IoU of the exported network on the held-out images, also written to
    `stage_dir/heldout.json`."""
    net, _ = load_weights(stem, map_location=device)
    test = seg_images(cfg, "test")
    scores = heldout_scores(net.eval(), [torch.from_numpy(i) for i in test.images],
                            [torch.from_numpy(m) for m in test.masks], test.num_classes)
    source = cfg.seg.test_data or "embedded canvases"
    (stage_dir / "heldout.json").write_text(json.dumps({"images": len(test.images), "source": source, **scores},
                                                       indent=1))
    print(f"[seg] held-out images ({len(test.images)}, {source}): pixel accuracy "
          f"{scores['seg/heldout_pixel_accuracy']:.4f}, mean IoU {scores['seg/heldout_mean_iou']:.4f}", flush=True)
    return scores
