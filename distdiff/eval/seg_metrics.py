"""Segmentation scores from a confusion matrix: pixel accuracy and mean intersection over union."""

from __future__ import annotations

from typing import Sequence

import torch


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """int64 (K, K) counts, rows the true class, columns the predicted one; sums over workers add up.

    Args:
        pred, target: integer class maps of one shape.
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    index = target.reshape(-1).long() * num_classes + pred.reshape(-1).long()
    return torch.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def pixel_accuracy(confusion: torch.Tensor) -> float:
    """The fraction of pixels classified correctly."""
    return float(confusion.diagonal().sum() / confusion.sum().clamp(min=1))


def mean_iou(confusion: torch.Tensor) -> float:
    """Mean over classes of |pred ∩ true| / |pred ∪ true|, over the classes present in either."""
    inter = confusion.diagonal().double()
    union = confusion.sum(0).double() + confusion.sum(1).double() - inter
    present = union > 0
    return float((inter[present] / union[present]).mean()) if present.any() else float("nan")


def heldout_scores(net: torch.nn.Module, images: Sequence[torch.Tensor], masks: Sequence[torch.Tensor],
                   num_classes: int) -> dict:
    """Pixel accuracy and mean IoU (background included as a class) of a segmentation U-Net over whole
    images (uint8 (C, H, W) each, sizes may differ) against their masks ((H, W) each), by overlap-tile
    inference, one image at a time; the scores pool every pixel of every image."""
    from distdiff.models.seg_tiling import segment_classes

    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    for image, mask in zip(images, masks):
        confusion += confusion_matrix(segment_classes(net, image[None])[0], mask, num_classes)
    return {"seg/heldout_pixel_accuracy": pixel_accuracy(confusion), "seg/heldout_mean_iou": mean_iou(confusion)}
