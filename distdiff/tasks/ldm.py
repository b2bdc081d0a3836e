"""Stage 2a: the DDPM epsilon-prediction step on scaled latents."""

from __future__ import annotations

import torch

from distdiff.diffusion import Schedule, ddpm_loss
from distdiff.tasks.base import Updater, check_finite


class LDMTask:
    """Algorithm 1 of Ho et al. (2020) on z0, with optional label dropout for classifier-free guidance.

    Args:
        schedule: the DDPM schedule.
        num_classes: None for an unconditional U-Net; otherwise the label count (label `num_classes`
            is the null label).
        label_dropout: probability of replacing a label by the null label.
    """

    networks = ("unet",)

    def __init__(self, schedule: Schedule, num_classes: int | None = None, label_dropout: float = 0.1):
        self.schedule = schedule
        self.num_classes = num_classes
        self.label_dropout = label_dropout

    def _labels(self, labels: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        drop = torch.rand(labels.shape, generator=generator, device=labels.device) < self.label_dropout
        return torch.where(drop, torch.full_like(labels, self.num_classes), labels)

    def step(self, z0: torch.Tensor, batch: dict, updater: Updater, step: int, generator) -> dict[str, float]:
        """One optimizer step of the U-Net on latents z0 (B, c, h, w) (labels from `batch`); returns metrics."""
        kwargs = {}
        if self.num_classes is not None:
            kwargs["y"] = self._labels(batch["label"].to(z0.device), generator)
        loss = ddpm_loss(updater.module("unet"), self.schedule, z0, generator=generator, model_kwargs=kwargs)
        check_finite("ldm loss", loss)
        stats = updater.update("unet", loss)
        return {"ldm/loss": float(loss.detach()), **{f"ldm/{k}": v for k, v in stats.items()}}
