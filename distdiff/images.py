"""Images shared by training and evaluation: the one PNG-exact quantizer, sample grids, comparison sheets.

Every image that is saved or scored goes through `quantize_to_uint8`, so a metric computed on
saved PNG files equals the metric on the in-memory samples, and training grids and evaluation
grids show the same pixels.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

MIN_TILE = 96  # grids upscale small images (nearest neighbour) to tiles at least this many pixels high


def quantize_to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Quantize images in [-1, 1] to uint8 exactly as they would be stored in a PNG file.

    The mapping is round-half-up of (x + 1) * 127.5 after clamping to [-1, 1], i.e. -1 -> 0,
    1 -> 255.

    Args:
        images: float (B, C, H, W) in [-1, 1] (values outside are clamped).

    Returns:
        uint8 (B, C, H, W).
    """
    scaled = (images.detach().float().clamp(-1.0, 1.0) + 1.0) * 127.5  # [0, 255]
    return torch.floor(scaled + 0.5).clamp(0, 255).to(torch.uint8)


def _as_uint8(images: torch.Tensor) -> torch.Tensor:
    return images if images.dtype == torch.uint8 else quantize_to_uint8(images)


def upscale_factor(height: int, min_tile: int = MIN_TILE) -> int:
    """Integer nearest-neighbour factor that makes a tile of `height` pixels at least `min_tile` high."""
    return max(1, math.ceil(min_tile / max(1, height)))


def make_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2, scale: int = 1) -> np.ndarray:
    """Tile images into one HWC uint8 array.

    Args:
        images: uint8 (B, C, H, W), or float in [-1, 1] (quantized first), with C in {1, 3}.
        nrow: images per row (default: ceil(sqrt(B))).
        padding: pixels of black between tiles (before upscaling).
        scale: nearest-neighbour upscaling of the whole grid.

    Returns:
        uint8 array (H', W', C).
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"make_grid takes (B, 1|3, H, W) images, got {tuple(images.shape)}")
    images = _as_uint8(images)
    b, c, h, w = images.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(b)))
    rows = math.ceil(b / nrow)
    grid = np.zeros((rows * (h + padding) + padding, nrow * (w + padding) + padding, c), np.uint8)
    hwc = images.permute(0, 2, 3, 1).cpu().numpy()  # (B, H, W, C)
    for i in range(b):
        top = padding + (i // nrow) * (h + padding)
        left = padding + (i % nrow) * (w + padding)
        grid[top : top + h, left : left + w] = hwc[i]
    if scale > 1:
        grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    return grid


def _pil(array: np.ndarray) -> Image.Image:
    return Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)


def _save_png(image: Image.Image, path: str | Path) -> Path:
    """Write a PNG atomically (temporary file, then rename); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    image.save(tmp, format="PNG")
    os.replace(tmp, path)
    return path


def grid_png_bytes(images: torch.Tensor, nrow: int | None = None, scale: int | None = None) -> bytes:
    """A grid as PNG bytes (for writing to object storage); `scale` None upscales small images."""
    import io

    out = io.BytesIO()
    _pil(make_grid(images, nrow, scale=scale or upscale_factor(images.shape[2]))).save(out, format="PNG")
    return out.getvalue()


def save_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None, scale: int | None = None) -> Path:
    """Write a PNG grid of images (uint8, or float in [-1, 1]); small images are upscaled to be seen.

    Args:
        images: (N, C, H, W).
        path: destination.
        nrow: images per row.
        scale: nearest-neighbour factor (None: enough for `MIN_TILE`-pixel tiles; 1: actual size).
    """
    return _save_png(_pil(make_grid(images, nrow, scale=scale or upscale_factor(images.shape[2]))), path)


def comparison_sheet(panels: dict[str, torch.Tensor], nrow: int = 4) -> Image.Image:
    """One sheet with a labelled grid per model side by side (e.g. "LDM DDPM-1000", "DDGAN-4").

    Args:
        panels: label -> images (N, C, H, W), uint8 or float in [-1, 1]; same C, H, W for all.
        nrow: images per row of each panel.
    """
    if not panels:
        raise ValueError("save_comparison needs at least one panel")
    first = next(iter(panels.values()))
    scale = upscale_factor(first.shape[2], min_tile=64)
    grids = [_pil(make_grid(images, nrow, scale=scale)).convert("RGB") for images in panels.values()]
    label_h, gap = 22, 12
    width = sum(g.width for g in grids) + gap * (len(grids) + 1)
    height = max(g.height for g in grids) + label_h + gap
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    left = gap
    for label, grid in zip(panels, grids):
        draw.text((left, 4), label, fill="black")
        sheet.paste(grid, (left, label_h))
        left += grid.width + gap
    return sheet


def save_comparison(panels: dict[str, torch.Tensor], path: str | Path, nrow: int = 4) -> Path:
    """Write `comparison_sheet(panels, nrow)` as a PNG."""
    return _save_png(comparison_sheet(panels, nrow), path)


def comparison_png_bytes(panels: dict[str, torch.Tensor], nrow: int = 4) -> bytes:
    """`comparison_sheet(panels, nrow)` as PNG bytes (for writing to object storage)."""
    import io

    out = io.BytesIO()
    comparison_sheet(panels, nrow).save(out, format="PNG")
    return out.getvalue()
