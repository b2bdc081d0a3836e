"""Turning a batch into scaled VAE latents: from images through the frozen encoder, or from latent shards."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from distdiff.diffusion import randn
from distdiff.models.export import load_weights


class LatentSource:
    """Produces the diffusion-space tensor z0 for a batch.

    With a VAE, images are encoded (posterior sample) and multiplied by the VAE's scale factor;
    latent-shard batches carry the posterior mean and log-variance, so the encoder is skipped.
    Without a VAE (pixel space) the images are used as they are.
    """

    def __init__(self, vae: nn.Module | None):
        self.vae = vae
        if vae is not None:
            vae.eval().requires_grad_(False)

    @property
    def scale(self) -> float:
        return float(self.vae.scale_factor) if self.vae is not None else 1.0

    @torch.no_grad()
    def __call__(self, batch: dict, generator: torch.Generator | None) -> torch.Tensor:
        """Return z0 (B, c, h, w) for `batch`."""
        if "latent_mean" in batch:
            mean, logvar = batch["latent_mean"], batch["latent_logvar"]
        elif self.vae is None:
            return batch["image"]
        else:
            mean, logvar = self.vae.encode(batch["image"])
        eps = randn(mean.shape, generator, device=mean.device, dtype=mean.dtype)
        return (mean + torch.exp(0.5 * logvar) * eps) * self.scale

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) in [-1, 1] -> diffusion-space z0 (B, c, h, w): the scaled posterior mean
        (no sampling, so `decode(encode(x))` is the VAE's reconstruction of x)."""
        if self.vae is None:
            return images
        mean, _ = self.vae.encode(images)
        return mean * self.scale

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latents (B, c, h, w) -> images (B, C, H, W) in [-1, 1]."""
        if self.vae is None:
            return z.clamp(-1, 1)
        return self.vae.decode(z / self.scale).clamp(-1, 1)


class VAEEncoder:
    """The encoder of `make_shards latents` (`distdiff.data.encode_latent_shards`): exported VAE weights
    (`save_weights` format), loaded lazily in the process that encodes.

    Args:
        weights: path of the exported VAE (with or without .safetensors / .json).
        device: torch device to encode on.
    """

    def __init__(self, weights: str | Path, device: str = "cpu"):
        self.weights, self.device, self._vae = str(weights), device, None

    def __getstate__(self) -> dict:
        return {"weights": self.weights, "device": self.device, "_vae": None}  # ship the path, not the model

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, C, H, W) in [-1, 1] -> (mean, logvar), each (B, c, h, w)."""
        if self._vae is None:
            self._vae, _ = load_weights(self.weights, map_location=self.device)
        return self._vae.encode(images.to(self.device))

    def describe(self) -> dict:
        return {"type": "vae", "weights": Path(self.weights).name}
