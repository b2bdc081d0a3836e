"""Image helpers shared by training and evaluation: PNG-exact quantisation and sample grids."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Quantise images in [-1, 1] to uint8 exactly as a PNG stores them: round((x + 1) * 127.5)."""
    return ((images.detach().float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


def make_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2) -> np.ndarray:
    """Tile images (N, C, H, W) in [-1, 1] into one uint8 array (H', W', C) with C in {1, 3}."""
    n, c, h, w = images.shape
    nrow = nrow or max(1, int(math.ceil(math.sqrt(n))))
    ncol = int(math.ceil(n / nrow))
    pixels = to_uint8(images).cpu().numpy()  # (N, C, H, W)
    grid = np.zeros((ncol * (h + padding) + padding, nrow * (w + padding) + padding, c), dtype=np.uint8)
    for i in range(n):
        row, col = divmod(i, nrow)
        y, x = padding + row * (h + padding), padding + col * (w + padding)
        grid[y : y + h, x : x + w] = pixels[i].transpose(1, 2, 0)
    return grid


def save_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None) -> Path:
    """Write a PNG grid of images (N, C, H, W) in [-1, 1]; returns the path (written atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid = make_grid(images, nrow)
    mode_image = Image.fromarray(grid[:, :, 0] if grid.shape[2] == 1 else grid)
    tmp = path.with_name(f".{path.name}.tmp")
    mode_image.save(tmp, format="PNG")
    os.replace(tmp, path)
    return path
