"""PNG sample grids."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch


def quantize_to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Quantize images in [-1, 1] to uint8 exactly as they would be stored in a PNG file.

    The mapping is round-half-up of (x + 1) * 127.5 after clamping to [-1, 1], i.e. -1 -> 0,
    1 -> 255, and the values a PNG writer would keep; every metric sees these uint8 values (never
    a lossy format), so a metric on saved PNGs equals the metric on the in-memory samples.

    Args:
        images: float (B, C, H, W) in [-1, 1] (values outside are clamped).

    Returns:
        uint8 (B, C, H, W).
    """
    scaled = (images.detach().float().clamp(-1.0, 1.0) + 1.0) * 127.5  # [0, 255]
    return torch.floor(scaled + 0.5).clamp(0, 255).to(torch.uint8)


def make_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2) -> np.ndarray:
    """Tile uint8 images into one HWC array.

    Args:
        images: uint8 (B, C, H, W) with C in {1, 3}.
        nrow: images per row (default: ceil(sqrt(B))).
        padding: pixels of black between tiles.

    Returns:
        uint8 array (H', W', C).
    """
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"make_grid takes uint8 (B, 1|3, H, W), got {images.dtype} {tuple(images.shape)}")
    b, c, h, w = images.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(b)))
    ncol_rows = math.ceil(b / nrow)
    grid = np.zeros((ncol_rows * (h + padding) + padding, nrow * (w + padding) + padding, c), np.uint8)
    hwc = images.permute(0, 2, 3, 1).cpu().numpy()  # (B, H, W, C)
    for i in range(b):
        top = padding + (i // nrow) * (h + padding)
        left = padding + (i % nrow) * (w + padding)
        grid[top : top + h, left : left + w] = hwc[i]
    return grid


def save_image_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None) -> Path:
    """Save uint8 images as one PNG grid.

    Args:
        images: uint8 (B, C, H, W) with C in {1, 3}.
        path: destination `.png` file; parent folders are created.
        nrow: images per row.

    Returns:
        the path written.
    """
    from PIL import Image

    grid = make_grid(images, nrow)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid[..., 0] if grid.shape[2] == 1 else grid).save(path, format="PNG")
    return path
