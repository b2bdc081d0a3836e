"""The segmentation U-Net's loss: a pixel-wise softmax cross entropy, optionally weighted per pixel."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _center(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    top, left = (x.shape[-2] - height) // 2, (x.shape[-1] - width) // 2
    return x[..., top:top + height, left:left + width]


def weighted_pixel_cross_entropy(logits: torch.Tensor, target: torch.Tensor,
                                 weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over pixels of w(x) * -log softmax(logits)(x)[target(x)].

    A valid-convolution U-Net's output covers the centre of its input tile, so the target and the
    weights may be the tile's size: they are centre-cropped to the logits'.

    Args:
        logits: (B, K, h, w).
        target: (B, H, W) int64 class indices, H >= h, W >= w.
        weights: (B, H, W) pixel weights (the paper's w(x)), or None for 1 everywhere.

    Returns:
        scalar loss.
    """
    h, w = logits.shape[-2:]
    if target.shape[-2] < h or target.shape[-1] < w:
        raise ValueError(f"target {tuple(target.shape)} is smaller than the logits {tuple(logits.shape)}")
    per_pixel = F.cross_entropy(logits, _center(target, h, w), reduction="none")  # (B, h, w)
    if weights is None:
        return per_pixel.mean()
    return (per_pixel * _center(weights, h, w).to(per_pixel.dtype)).mean()
