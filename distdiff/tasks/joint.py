"""Stage 2: any set of denoisers (the LDM U-Net, DDGANs, GAN baselines) trained jointly on one latent stream.

One data pass and one VAE encode per batch feed every member; each keeps its own networks,
optimizers, EMA and metrics, so their curves and samples are comparable step for step.
"""

from __future__ import annotations

import torch

from distdiff.tasks.base import Updater
from distdiff.tasks.latents import LatentSource


class JointLatentTask:
    """Encode once, then step each member on the same latents, in order.

    Args:
        latents: turns a batch into diffusion-space tensors z0.
        members: name -> task with `networks` and `step(z0, batch, updater, step, generator)`.
    """

    def __init__(self, latents: LatentSource, members: dict):
        if not members:
            raise ValueError("JointLatentTask needs at least one member")
        self.latents = latents
        self.members = dict(members)

    @property
    def networks(self) -> tuple[str, ...]:
        return tuple(net for task in self.members.values() for net in task.networks)

    def step(self, batch: dict, updater: Updater, step: int, generator: torch.Generator | None) -> dict[str, float]:
        """One joint step on a batch; returns the metrics of every member."""
        z0 = self.latents(batch, generator)  # (B, c, h, w)
        metrics = {"latent/std": float(z0.std())}
        for task in self.members.values():
            metrics.update(task.step(z0, batch, updater, step, generator))
        return metrics
