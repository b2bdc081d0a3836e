"""Sampling the trained stage-2 models into images, with one seed per sample.

Shared by the training loop (sample grids, the run summary) and the evaluator, so both draw
images the same way: sample i depends only on its seed, never on the batch it was drawn in.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from distdiff.diffusion import (
    Schedule,
    classifier_free_guidance,
    ddgan_sample,
    ddim_sample,
    ddpm_sample,
    per_sample_generators,
)
from distdiff.tasks.latents import LatentSource


class LatentSampler:
    """Draws images from an LDM U-Net and/or a DDGAN generator in latent (or pixel) space.

    Args:
        latents: decodes scaled latents into images (identity clamp in pixel space).
        latent_shape: (c, h, w) of the diffusion space.
        unet, ldm_schedule: the epsilon network and its DDPM schedule (or None).
        generator, ddgan_schedule, nz: the DDGAN generator, its schedule and z size (or None).
        num_classes, guidance_scale: class-conditional U-Nets sample with classifier-free guidance.
    """

    def __init__(self, latents: LatentSource, latent_shape: Sequence[int], unet: nn.Module | None = None,
                 ldm_schedule: Schedule | None = None, generator: nn.Module | None = None,
                 ddgan_schedule: Schedule | None = None, nz: int = 100, num_classes: int | None = None,
                 guidance_scale: float = 1.0):
        self.latents = latents
        self.latent_shape = tuple(latent_shape)
        self.unet, self.ldm_schedule = unet, ldm_schedule
        self.generator, self.ddgan_schedule, self.nz = generator, ddgan_schedule, nz
        self.num_classes, self.guidance_scale = num_classes, guidance_scale

    def _device(self, net: nn.Module) -> torch.device:
        return next(net.parameters()).device

    def _eps_model(self, labels: torch.Tensor | None):
        if self.num_classes is None:
            return self.unet, {}
        if labels is None:
            raise ValueError("a class-conditional U-Net needs labels to sample")
        if self.guidance_scale == 1.0:
            return self.unet, {"y": labels}
        return classifier_free_guidance(self.unet, self.guidance_scale, self.num_classes), {"y": labels}

    @torch.no_grad()
    def sample_ldm(self, seeds: Sequence[int], method: str = "ddim", steps: int = 50,
                   labels: torch.Tensor | None = None, progress: bool = False, eta: float = 0.0) -> torch.Tensor:
        """Images (N, C, H, W) in [-1, 1] from the U-Net: `method` "ddpm" (all T steps) or "ddim" (`steps`, `eta`)."""
        device = self._device(self.unet)
        rngs = per_sample_generators(list(seeds), device)
        shape = (len(seeds), *self.latent_shape)
        model, kwargs = self._eps_model(labels)
        if method == "ddpm":
            z = ddpm_sample(model, self.ldm_schedule, shape, generator=rngs, device=device,
                            model_kwargs=kwargs, progress=progress)
        elif method == "ddim":
            z = ddim_sample(model, self.ldm_schedule, shape, steps=steps, eta=eta, generator=rngs,
                            device=device, model_kwargs=kwargs, progress=progress)
        else:
            raise ValueError(f"unknown LDM sampler '{method}'; valid: ddpm, ddim")
        return self.latents.decode(z)

    @torch.no_grad()
    def sample_ddgan(self, seeds: Sequence[int]) -> torch.Tensor:
        """Images (N, C, H, W) in [-1, 1] from the DDGAN generator in T steps."""
        device = self._device(self.generator)
        rngs = per_sample_generators(list(seeds), device)
        z = ddgan_sample(self.generator, self.ddgan_schedule, (len(seeds), *self.latent_shape), self.nz,
                         rng=rngs, device=device)
        return self.latents.decode(z)
