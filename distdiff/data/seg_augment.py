"""Elastic deformation of a segmentation tile, as the U-Net paper trains with it.

Random displacement vectors on a coarse 3 x 3 grid (standard deviation 10 pixels in the paper),
interpolated smoothly over the tile (bicubic); the image is resampled with cubic splines, the mask
and the weight map by the nearest pixel so that classes stay classes.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def displacement_field(side: int, rng: np.random.Generator, grid: int = 3, std: float = 10.0) -> np.ndarray:
    """float (2, side, side): per-pixel (dy, dx), smooth, from a grid x grid of N(0, std^2) vectors."""
    coarse = rng.normal(0.0, std, size=(2, grid, grid))
    return np.stack([ndimage.zoom(c, side / grid, order=3, mode="nearest")[:side, :side] for c in coarse])


def elastic_deform(arrays: dict[str, np.ndarray], field: np.ndarray) -> dict[str, np.ndarray]:
    """Resample each array of a tile along one displacement field.

    Args:
        arrays: "image" (cubic; (side, side) or (C, side, side), each channel alike), and "mask" / "weight"
            (nearest), (side, side).
        field: (2, side, side) from `displacement_field`.
    """
    side = field.shape[-1]
    rows, cols = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    coords = np.stack([rows + field[0], cols + field[1]])  # where each output pixel reads from
    out = {}
    for key, array in arrays.items():
        order = 3 if key == "image" else 0
        planes = array.reshape(-1, side, side).astype(np.float32)  # (C, side, side)
        warped = np.stack([ndimage.map_coordinates(p, coords, order=order, mode="mirror") for p in planes])
        warped = warped.reshape(array.shape)
        out[key] = np.clip(np.rint(warped), 0, 255).astype(array.dtype) if array.dtype == np.uint8 else \
            warped.astype(array.dtype)
    return out
