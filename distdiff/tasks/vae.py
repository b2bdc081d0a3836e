"""Stage 1: one ELBO step of the KL autoencoder."""

from __future__ import annotations

import torch

from distdiff.losses import vae_elbo_loss
from distdiff.tasks.base import Updater, check_finite


class VAETask:
    """Trains a KLVAE with reconstruction + beta * KL.

    Args:
        kl_weight: beta, the weight of the KL term.
        likelihood: "gaussian" (L2) or "bernoulli" (BCE on [0, 1] data).
    """

    networks = ("vae",)

    def __init__(self, kl_weight: float, likelihood: str):
        self.kl_weight = kl_weight
        self.likelihood = likelihood

    def step(self, batch: dict, updater: Updater, generator: torch.Generator | None) -> dict[str, float]:
        """One optimizer step on a batch of images in [-1, 1]; returns metrics."""
        vae = updater.module("vae")
        x = batch["image"]  # (B, C, H, W)
        raw, mean, logvar = vae(x, generator=generator)
        loss, parts = vae_elbo_loss(raw, x, mean, logvar, beta=self.kl_weight, likelihood=self.likelihood)
        check_finite("vae loss", loss)
        stats = updater.update("vae", loss)
        return {
            "vae/loss": float(loss.detach()),
            "vae/recon": float(parts["recon"]),
            "vae/kl": float(parts["kl"]),
            **{f"vae/{k}": v for k, v in stats.items()},
        }
