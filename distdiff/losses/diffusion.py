"""The DDPM training objective (Ho et al. 2020, Algorithm 1): || eps - eps_theta(x_t, t) ||^2."""

from __future__ import annotations

import torch


def eps_mse_loss(eps_pred: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Mean squared error between predicted and true noise.

    Args:
        eps_pred: (B, C, H, W) network output.
        eps: (B, C, H, W) noise that was added in q_sample.

    Returns:
        Scalar: mean over all elements (computed in float32 at least, so bf16 outputs do not
        lose the loss's precision).
    """
    if eps_pred.shape != eps.shape:
        raise ValueError(f"eps_pred shape {tuple(eps_pred.shape)} != eps shape {tuple(eps.shape)}")
    if eps_pred.dtype in (torch.float16, torch.bfloat16):
        # A mean over millions of half-precision squares loses digits; reduce in float32.
        eps_pred, eps = eps_pred.float(), eps.float()
    return (eps_pred - eps).pow(2).mean()
