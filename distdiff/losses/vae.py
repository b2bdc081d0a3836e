"""The VAE objective: negative ELBO = reconstruction NLL + beta * KL(q(z|x) || N(0, I)).

For a diagonal Gaussian posterior with mean m and log-variance l, summed over latent dims:
    KL = 0.5 * sum(m^2 + exp(l) - 1 - l)
"""

from __future__ import annotations

from typing import Dict, Tuple

import torch
import torch.nn.functional as F


def kl_diag_gaussian(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Closed-form KL(N(mean, exp(logvar)) || N(0, I)), summed over all non-batch dims.

    Args:
        mean: (B, ...) posterior mean, e.g. (B, C, h, w) latents.
        logvar: (B, ...) posterior log-variance, same shape.

    Returns:
        (B,) KL per sample, in nats.
    """
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar)  # (B, ...)
    return kl.reshape(kl.shape[0], -1).sum(dim=1)


def _reconstruction_nll(raw_out: torch.Tensor, x: torch.Tensor, likelihood: str) -> torch.Tensor:
    """Per-sample reconstruction NLL, summed over pixels. Returns (B,)."""
    if raw_out.shape != x.shape:
        raise ValueError(f"decoder output shape {tuple(raw_out.shape)} != input shape {tuple(x.shape)}")
    if likelihood == "gaussian":
        # -log N(x; raw_out, I) up to the constant 0.5 * D * log(2 pi).
        per_pixel = 0.5 * (raw_out - x).pow(2)
    elif likelihood == "bernoulli":
        targets = (x + 1.0) * 0.5  # [-1, 1] -> [0, 1]
        per_pixel = F.binary_cross_entropy_with_logits(raw_out, targets, reduction="none")
    else:
        raise ValueError(f"unknown likelihood {likelihood!r}; expected 'gaussian' or 'bernoulli'")
    return per_pixel.reshape(per_pixel.shape[0], -1).sum(dim=1)


def vae_elbo_loss(
    raw_out: torch.Tensor,
    x: torch.Tensor,
    mean: torch.Tensor,
    logvar: torch.Tensor,
    beta: float = 1.0,
    likelihood: str = "gaussian",
) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """Negative ELBO (beta-VAE weighting), averaged over the batch.

    Args:
        raw_out: (B, C, H, W) decoder output: the image in [-1, 1] for "gaussian", logits for
            "bernoulli".
        x: (B, C, H, W) input image in [-1, 1].
        mean, logvar: (B, ...) diagonal Gaussian posterior q(z|x).
        beta: KL weight.
        likelihood: "gaussian" (0.5 * squared error summed over pixels, the NLL of a
            unit-variance Gaussian up to a constant) or "bernoulli" (BCE-with-logits against
            targets (x + 1) / 2, summed over pixels).

    Returns:
        (loss, metrics): loss is the scalar mean over the batch of recon + beta * KL; metrics
        holds detached scalar tensors "recon", "kl" (batch means) and "loss".
    """
    recon = _reconstruction_nll(raw_out, x, likelihood)  # (B,)
    kl = kl_diag_gaussian(mean, logvar)  # (B,)
    loss = (recon + beta * kl).mean()
    metrics = {"recon": recon.mean().detach(), "kl": kl.mean().detach(), "loss": loss.detach()}
    return loss, metrics
