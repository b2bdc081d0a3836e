"""The segmentation U-Net's training step: weighted pixel cross entropy on mirrored input tiles."""

from __future__ import annotations

from distdiff.losses.seg import weighted_pixel_cross_entropy
from distdiff.models.seg_unet import center_crop
from distdiff.tasks.base import Updater, check_finite


class SegTask:
    """One optimizer step of the segmentation U-Net on a batch of tiles.

    The batch holds `image` (B, C, S, S) floats in [-1, 1] (an input tile, with its mirrored context),
    `mask` (B, S, S) int64 class indices of the same tile and optionally `weight` (B, S, S) (the
    paper's w(x)); the network's valid output covers the tile's centre, where the loss is taken.
    """

    networks = ("seg",)

    def step(self, batch: dict, updater: Updater, step: int, generator=None) -> dict[str, float]:
        net = updater.module("seg")
        device = next(iter(batch.values())).device
        logits = net(batch["image"].to(device))  # (B, K, s, s), s = S - 2 margin
        mask = batch["mask"].to(device)
        loss = weighted_pixel_cross_entropy(logits, mask, batch.get("weight"))
        check_finite("segmentation loss", loss)
        stats = updater.update("seg", loss)
        correct = (logits.detach().argmax(1) == center_crop(mask, *logits.shape[-2:])).float().mean()
        return {"seg/loss": float(loss.detach()), "seg/pixel_accuracy": float(correct),
                **{f"seg/{k}": v for k, v in stats.items()}}
