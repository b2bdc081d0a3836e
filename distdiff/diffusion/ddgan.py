"""Denoising Diffusion GAN (Xiao et al. 2022): pair sampling, posterior sampling, the sampler.

Matches the official code's semantics with this package's indexing (t in [0, T), over the T
real betas of ``ddgan_schedule``); abar = alphas_cumprod, abar_prev = alphas_cumprod_prev:
    x_t   = sqrt(abar_prev[t]) x0 + sqrt(1 - abar_prev[t]) eps1      (x_t = x0 at t = 0)
    x_tp1 = sqrt(alpha[t]) x_t + sqrt(beta[t]) eps2                    (so x_tp1 ~ q(. | x0) with abar[t])
The generator G(x_tp1, t, z) predicts x0; x_t is then drawn from the true posterior
    q(x_t | x_tp1, x0) = N(coef1[t] x0 + coef2[t] x_tp1, posterior_variance[t])
with no noise at t = 0.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple, Union

import torch

from distdiff.diffusion.ddpm import StepHook, posterior_mean_variance, steps_from
from distdiff.diffusion.rng import GeneratorLike, randn
from distdiff.diffusion.schedules import Schedule, extract


def ddgan_q_sample_pairs(
    schedule: Schedule, x0: torch.Tensor, t: torch.Tensor, generator: GeneratorLike = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Draw the (less noisy, more noisy) pair (x_t, x_tp1) that DDGAN's discriminator sees as real.

    Args:
        schedule: a ``ddgan_schedule``.
        x0: (B, C, H, W) clean data.
        t: int64 (B,) steps in [0, T).
        generator: None, a ``torch.Generator`` or one generator per sample; eps1 is drawn
            before eps2.

    Returns:
        (x_t, x_tp1), each (B, C, H, W).
    """
    eps1 = randn(x0.shape, generator, device=x0.device, dtype=x0.dtype)
    eps2 = randn(x0.shape, generator, device=x0.device, dtype=x0.dtype)
    abar_prev = schedule.alphas_cumprod_prev
    x_t = extract(abar_prev.sqrt(), t, x0) * x0 + extract((1.0 - abar_prev).sqrt(), t, x0) * eps1
    x_tp1 = extract(schedule.alphas.sqrt(), t, x0) * x_t + extract(schedule.betas.sqrt(), t, x0) * eps2
    return x_t, x_tp1


def ddgan_posterior_sample(
    schedule: Schedule,
    x0_pred: torch.Tensor,
    x_tp1: torch.Tensor,
    t: torch.Tensor,
    noise: Optional[torch.Tensor],
) -> torch.Tensor:
    """Sample x_t ~ q(x_t | x_tp1, x0 = x0_pred).

    x_t = coef1[t] x0_pred + coef2[t] x_tp1 + sqrt(posterior_variance[t]) noise, and no noise
    for the samples where t == 0 (there the result is x0_pred itself, as coef1[0] = 1, coef2[0] = 0).

    Args:
        schedule: a ``ddgan_schedule``.
        x0_pred: (B, C, H, W) generator's x0 prediction.
        x_tp1: (B, C, H, W) the noisier sample.
        t: int64 (B,) steps.
        noise: (B, C, H, W) standard normal noise, or None for the posterior mean.

    Returns:
        x_t, (B, C, H, W).
    """
    # DDGAN's x_tp1 plays DDPM's x_t: the same Gaussian posterior over the same schedule tables.
    mean, variance, _ = posterior_mean_variance(schedule, x0_pred, x_tp1, t)
    if noise is None:
        return mean
    nonzero = (t != 0).to(x_tp1.dtype).reshape(-1, *([1] * (x_tp1.ndim - 1)))  # (B, 1, 1, 1)
    return mean + nonzero * variance.sqrt() * noise


@torch.no_grad()
def ddgan_sample(
    generator_net: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    schedule: Schedule,
    shape: Sequence[int],
    nz: int,
    rng: GeneratorLike = None,
    device: Optional[Union[str, torch.device]] = None,
    dtype: torch.dtype = torch.float32,
    x_T: Optional[torch.Tensor] = None,
    start_step: Optional[int] = None,
    after_step: Optional[StepHook] = None,
) -> torch.Tensor:
    """DDGAN sampling: exactly T generator evaluations, t = T-1 down to 0.

    x ~ N(0, I); for each t: z ~ N(0, I) (B, nz); x0 = G(x, t, z); x = posterior sample.
    Noise order: x_T, then per step z and (for t > 0) the posterior noise.

    Args:
        generator_net: ``G(x_tp1, t, z) -> x0`` (B, C, H, W).
        schedule: a ``ddgan_schedule``.
        shape: (B, C, H, W) of the samples.
        nz: latent dimension of z.
        rng: None, a ``torch.Generator`` or one generator per sample.
        device: device of the samples (default: the generator's device, else CPU).
        dtype: dtype of the samples and of z.
        x_T: optional starting noise (B, C, H, W), used instead of drawing it.
        start_step: the step whose input ``x_T`` is when not T-1 (x_T then has q's noise level
            abar[start_step]; the paper's stroke-based synthesis starts there).
        after_step: ``after_step(x, step)`` after each step, x then at noise level step (-1: clean).

    Returns:
        x0 samples, (B, C, H, W).
    """
    if x_T is not None:
        x = x_T.to(dtype=dtype) if device is None else x_T.to(device=device, dtype=dtype)
    else:
        x = randn(shape, rng, device=device, dtype=dtype)  # (B, C, H, W)
    batch = x.shape[0]
    for i in steps_from(list(range(schedule.num_steps - 1, -1, -1)), start_step):
        t = torch.full((batch,), i, dtype=torch.int64, device=x.device)
        z = randn((batch, nz), rng, device=x.device, dtype=dtype)  # (B, nz)
        x0 = generator_net(x, t, z)
        noise = randn(x.shape, rng, device=x.device, dtype=dtype) if i > 0 else None
        x = ddgan_posterior_sample(schedule, x0, x, t, noise)  # now at q's noise level of step i - 1
        if after_step is not None:
            x = after_step(x, i - 1)
    return x
