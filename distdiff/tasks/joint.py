"""Stage 2: the LDM U-Net and the DDGAN trained jointly on one latent stream.

One data pass and one VAE encode per batch feed both models; each keeps its own optimizer,
EMA and metrics, and either can be switched off.
"""

from __future__ import annotations

import torch

from distdiff.tasks.ddgan import DDGANTask
from distdiff.tasks.latents import LatentSource
from distdiff.tasks.ldm import LDMTask
from distdiff.tasks.base import Updater


class JointLatentTask:
    """Encode once, then step the LDM and/or the DDGAN on the same latents."""

    def __init__(self, latents: LatentSource, ldm: LDMTask | None, ddgan: DDGANTask | None):
        if ldm is None and ddgan is None:
            raise ValueError("JointLatentTask needs at least one of ldm and ddgan")
        self.latents = latents
        self.ldm = ldm
        self.ddgan = ddgan

    @property
    def networks(self) -> tuple[str, ...]:
        return (self.ldm.networks if self.ldm else ()) + (self.ddgan.networks if self.ddgan else ())

    def step(self, batch: dict, updater: Updater, step: int, generator: torch.Generator | None) -> dict[str, float]:
        """One joint step on a batch; returns the metrics of both models."""
        z0 = self.latents(batch, generator)  # (B, c, h, w)
        metrics = {"latent/std": float(z0.std())}
        if self.ldm is not None:
            metrics.update(self.ldm.step(z0, batch["label"], updater, generator))
        if self.ddgan is not None:
            metrics.update(self.ddgan.step(z0, updater, step, generator))
        return metrics
