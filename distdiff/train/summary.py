"""Timing the samplers of a finished stage 2 and writing the run's `summary.json`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from distdiff.images import save_comparison, save_grid
from distdiff.tasks import Stage2Sampler, sampler_key, sampler_label, sampler_nfe
from distdiff.train.stages import grid_seeds


def _timed(fn, n: int) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    images = fn()
    return images, (time.perf_counter() - start) / n


def time_samplers(sampler: Stage2Sampler, n: int, out_dir: Path) -> dict:
    """Seconds per image, NFE and parameters of every default sampler on `n` images; saves their grids
    and one comparison sheet with every sampler side by side.

    Seconds per image cover the whole draw: every network evaluation and the VAE decode, after one
    untimed warm-up call of the network and the decoder at the same batch size.
    """
    seeds, labels = grid_seeds(n), sampler.class_labels(range(n))
    results, panels = {}, {}
    for model, settings in sampler.default_samplers():
        key, label = sampler_key(model, settings), sampler_label(model, settings)
        sampler.warm_up(model, n)  # untimed: kernels for this shape are prepared on first use
        images, spi = _timed(lambda: sampler.sample(model, settings, seeds, labels, progress=True), n)
        results[key] = {"label": label, "seconds_per_image": spi, "nfe": sampler_nfe(model, settings),
                        "parameters": model.parameters}
        save_grid(images, out_dir / f"{key}-final.png")
        panels[label] = images
    save_comparison(panels, out_dir / "comparison-final.png")
    return results


def write_summary(path: Path, stages: dict, sampling: dict, evaluation: dict | None = None) -> dict:
    """Write summary.json: per-stage final metrics, sampler timings and (if run) the evaluation table."""
    summary = {"stages": stages, "sampling": sampling}
    if evaluation is not None:
        summary["evaluation"] = evaluation
    path.write_text(json.dumps(summary, indent=1))
    return summary
