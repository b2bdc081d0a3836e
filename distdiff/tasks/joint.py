"""Stage 2: any set of denoisers (the LDM U-Net, DDGANs, GAN baselines) trained jointly on one latent stream.

One data pass and one VAE encode per batch feed every member; each keeps its own networks,
optimizers, EMA, metrics and random stream, so their curves and samples are comparable step for step
and adding or removing a member leaves the others' training unchanged.
"""

from __future__ import annotations

import zlib

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
        streams = member_generators(generator, self.members)
        for name, task in self.members.items():
            metrics.update(task.step(z0, batch, updater, step, streams[name]))
        return metrics


def member_generators(generator: torch.Generator | None, names) -> dict[str, torch.Generator | None]:
    """One random stream per member, seeded from a single draw of the step's stream and the member's name.

    The step's stream advances by exactly one draw whatever the members, so a member's noise (and with
    it its training) does not depend on which other members train beside it.
    """
    if generator is None:
        return {name: None for name in names}
    base = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    return {name: torch.Generator(device=generator.device).manual_seed((base + zlib.crc32(name.encode())) % 2**63)
            for name in names}
