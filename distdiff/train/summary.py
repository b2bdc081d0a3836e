"""Timing the samplers of a finished stage 2 and writing the run's `summary.json`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from distdiff.config import RunConfig
from distdiff.images import save_grid
from distdiff.tasks import LatentSampler
from distdiff.train.stages import SAMPLE_SEED_BASE, _grid_labels, ddim_name


def _timed(fn, n: int) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    images = fn()
    return images, (time.perf_counter() - start) / n


def time_samplers(cfg: RunConfig, sampler: LatentSampler, n: int, out_dir: Path) -> dict:
    """Seconds per image (and NFE) of LDM-DDPM, LDM-DDIM and DDGAN on `n` images; saves their grids."""
    seeds = list(range(SAMPLE_SEED_BASE, SAMPLE_SEED_BASE + n))
    results = {}
    if sampler.unet is not None:
        labels = _grid_labels(cfg, sampler, n)
        runs = ((f"ldm_ddpm{cfg.ldm.num_steps}", "ddpm", cfg.ldm.num_steps, 1.0),
                (ddim_name(cfg), "ddim", cfg.ldm.ddim_steps, cfg.ldm.ddim_eta))
        for name, method, steps, eta in runs:
            images, spi = _timed(lambda: sampler.sample_ldm(seeds, method, steps, labels, True, eta), n)
            results[name] = {"seconds_per_image": spi, "nfe": steps}
            save_grid(images, out_dir / f"{name}-final.png")
    if sampler.generator is not None:
        steps = sampler.ddgan_schedule.num_steps
        images, spi = _timed(lambda: sampler.sample_ddgan(seeds), n)
        results[f"ddgan_{steps}step"] = {"seconds_per_image": spi, "nfe": steps}
        save_grid(images, out_dir / f"ddgan_{steps}step-final.png")
    return results


def write_summary(path: Path, stages: dict, sampling: dict) -> dict:
    """Write summary.json: per-stage final metrics and sampler timings."""
    summary = {"stages": stages, "sampling": sampling}
    path.write_text(json.dumps(summary, indent=1))
    return summary
