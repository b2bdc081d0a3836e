"""Writing the evaluation: `eval.json`, `eval.md` (tables in the DDGAN paper's form), PNG grids.

The output folder may be local or an s3:// prefix.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from distdiff.data.urls import is_s3, join
from distdiff.images import comparison_png_bytes, grid_png_bytes


def metric_key(metric_name: str) -> str:
    """The JSON key of a Fréchet-distance metric: "FID" -> "fid", "FD-MNIST" -> "fd_mnist"."""
    return metric_name.lower().replace("-", "_")


def _fmt(value, digits: int) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        # Tiny distances (FD-MNIST of an untrained network) would all print as 0.00.
        return f"{value:.{digits}f}" if abs(value) >= 10 ** -digits or value == 0 else f"{value:.3g}"
    return str(value)


def results_markdown(results: dict) -> str:
    """Markdown tables: (model, FD, recall, NFE, seconds per image), plus modes/KL for Stacked MNIST.

    Args:
        results: the dict `evaluate_worker` returns on rank 0.

    Returns:
        markdown text.
    """
    name, key = results["metric"], metric_key(results["metric"])
    lines = [
        f"Evaluation of `{results.get('checkpoint') or 'samples'}`: {results['num_samples']} samples per model, "
        f"features `{results['extractor']}`, reference `{results['reference']['name']}` "
        f"({results['reference']['num_images']} images).",
        "",
        f"| Model | {name}↓ | Recall↑ | NFE↓ | Time (s/img)↓ |",
        "|---|---|---|---|---|",
    ]
    for row in results["models"]:
        lines.append(f"| {row['label']} | {_fmt(row[key], 2)} | {_fmt(row.get('recall'), 2)} | {row['nfe']} | "
                     f"{_fmt(row['sec_per_image'], 4)} |")
    lines.append("")
    lines.append(f"Precision/recall: k = {results.get('pr_k')} nearest neighbours on "
                 f"{results.get('pr_samples')} samples per set. Seconds per image: generation only "
                 "(denoiser steps and decoding, after one untimed warm-up call), summed over "
                 f"{results['world_size']} worker(s), batch {results['batch_size']}, device {results['device']}.")
    if any(row.get("modes") is not None for row in results["models"]):
        num_modes = next(row.get("num_modes") for row in results["models"] if row.get("modes") is not None)
        lines += ["", f"| Model | Modes (of {num_modes})↑ | KL↓ |", "|---|---|---|"]
        for row in results["models"]:
            lines.append(f"| {row['label']} | {_fmt(row.get('modes'), 0)} | {_fmt(row.get('reverse_kl'), 4)} |")
        ref = results["reference"]
        if ref.get("modes") is not None:
            lines.append(f"| Reference data | {ref['modes']} | {_fmt(ref['reverse_kl'], 4)} |")
    return "\n".join(lines) + "\n"


def _write(url: str, data: bytes) -> None:
    if is_s3(url):
        from distdiff.data import storage

        storage.write_bytes(url, data)
        return
    path = Path(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def write_outputs(results: dict, grids: dict[str, torch.Tensor], out: str) -> list[str]:
    """Write eval.json, eval.md, `samples_<key>.png` grids and `comparison.png` (all grids side by side).

    Args:
        results: rank 0's results.
        grids: uint8 (n, C, H, W) sample images per source key.
        out: local folder or s3:// prefix.

    Returns:
        the URLs written.
    """
    written = []
    for key, images in grids.items():
        if len(images):
            url = join(out, f"samples_{key}.png")
            _write(url, grid_png_bytes(images))
            written.append(url)
    labels = {row["key"]: row["label"] for row in results["models"]}
    panels = {labels.get(key, key): images[:32] for key, images in grids.items() if len(images)}
    if panels:
        url = join(out, "comparison.png")
        _write(url, comparison_png_bytes(panels))
        written.append(url)
    for name, data in (("eval.md", results_markdown(results).encode()),
                       ("eval.json", json.dumps(results, indent=1, sort_keys=True).encode())):
        url = join(out, name)
        _write(url, data)
        written.append(url)
    return written
