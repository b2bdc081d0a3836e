"""The U-Net paper's pixel-wise loss weights (Ronneberger et al. 2015, eq. 2).

w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2)): w_c balances the class frequencies, and
the second term weighs heavily the thin background gaps between two objects that nearly touch (d1, d2:
the distances to the nearest and the second-nearest object), so that the network learns to separate
them. Computed once per mask, beside the data (it needs distance transforms, not gradients).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def class_balance_weights(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """w_c: each pixel weighted by the inverse frequency of its class in `mask`, scaled to mean 1.

    Args:
        mask: (H, W) integer class indices in [0, num_classes).

    Returns:
        float32 (H, W).
    """
    counts = np.bincount(mask.ravel(), minlength=num_classes).astype(np.float64)
    inverse = np.divide(1.0, counts, out=np.zeros_like(counts), where=counts > 0)
    weights = inverse[mask]
    return (weights / weights.mean()).astype(np.float32)


def border_weights(instances: np.ndarray, w0: float = 10.0, sigma: float = 5.0) -> np.ndarray:
    """The separation term w0 * exp(-(d1 + d2)^2 / (2 sigma^2)) on background pixels, 0 on objects.

    Args:
        instances: (H, W) integers, 0 for background and one id per object.
        w0, sigma: the paper's 10 and about 5 pixels.

    Returns:
        float32 (H, W); all zero with fewer than two objects (no gap to separate).
    """
    ids = np.unique(instances)
    ids = ids[ids != 0]
    if len(ids) < 2:
        return np.zeros(instances.shape, np.float32)
    # Distance of every pixel to each object, then the two smallest per pixel: (objects, H, W).
    distances = np.stack([ndimage.distance_transform_edt(instances != i) for i in ids])
    nearest_two = np.partition(distances, 1, axis=0)[:2]
    term = w0 * np.exp(-((nearest_two[0] + nearest_two[1]) ** 2) / (2.0 * sigma ** 2))
    return np.where(instances == 0, term, 0.0).astype(np.float32)


def unet_weight_map(mask: np.ndarray, instances: np.ndarray, num_classes: int, w0: float = 10.0,
                    sigma: float = 5.0) -> np.ndarray:
    """w(x) = w_c(x) + the border term: the paper's weight map for one (H, W) mask."""
    if mask.shape != instances.shape:
        raise ValueError(f"mask {mask.shape} and instance map {instances.shape} differ in shape")
    return class_balance_weights(mask, num_classes) + border_weights(instances, w0, sigma)
