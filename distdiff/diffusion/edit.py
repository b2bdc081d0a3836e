"""Editing with a trained sampler: image-to-image (SDEdit, Meng et al. 2022) and inpainting.

Both start from a known clean sample x0 (an encoded image) and run an unchanged sampler:
    image-to-image: x0 is noised to the step that a strength S in [0, 1] names, x_s ~ q(x_s | x0),
                    and the sampler runs from there (S = 0: x0 itself; S = 1: every step, from noise);
    inpainting:     after every step, where the mask keeps the known content, x is replaced by x0
                    re-noised to the noise level x has reached (x0 itself after the last step).
"Noise level step s" means q's marginal with abar[s]; -1 means clean. The same holds for a DDGAN
schedule, whose T steps are few: the strength picks one of them (the DDGAN paper's stroke-based
synthesis starts at such a step).
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import torch

from distdiff.diffusion.ddpm import StepHook, q_sample
from distdiff.diffusion.rng import GeneratorLike, randn
from distdiff.diffusion.schedules import Schedule


def strength_start(timesteps: Sequence[int], strength: float) -> Optional[int]:
    """The step an image-to-image run starts at: the last round(S * n) of the sampler's n steps run.

    Args:
        timesteps: the sampler's descending steps (all T for DDPM and DDGAN, the grid for DDIM).
        strength: S in [0, 1].

    Returns:
        The first step to run, or None when no step runs (S * n rounds to 0: x0 is the result).
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    kept = round(strength * len(timesteps))
    return None if kept == 0 else list(timesteps)[len(timesteps) - kept]


def noise_to(schedule: Schedule, x0: torch.Tensor, step: int, generator: GeneratorLike = None) -> torch.Tensor:
    """x0 (B, C, H, W) noised to noise level ``step`` (q_sample), or x0 itself for step -1."""
    if step < 0:
        return x0
    noise = randn(x0.shape, generator, device=x0.device, dtype=x0.dtype)
    t = torch.full((x0.shape[0],), step, dtype=torch.int64, device=x0.device)
    return q_sample(schedule, x0, t, noise)


def keep_known(schedule: Schedule, x0: torch.Tensor, keep: torch.Tensor, generator: GeneratorLike = None) -> StepHook:
    """A sampler's ``after_step`` hook for inpainting.

    Args:
        schedule: the sampler's schedule.
        x0: (B, C, H, W) the known clean sample.
        keep: (B or 1, 1, H, W) 1 where x0 is kept, 0 where the sampler generates.
        generator: draws the re-noising noise (one draw per step except after the last).

    Returns:
        ``hook(x, step) -> keep * x0_at_step + (1 - keep) * x``.
    """
    keep = keep.to(device=x0.device, dtype=x0.dtype)

    def hook(x: torch.Tensor, step: int) -> torch.Tensor:
        return keep * noise_to(schedule, x0, step, generator) + (1 - keep) * x

    return hook


def latent_keep_mask(mask: torch.Tensor, size: List[int]) -> torch.Tensor:
    """A pixel mask (B, 1, H, W), 1 = generate, turned into a latent keep mask (B, 1, h, w), 1 = keep.

    A latent cell is kept only when none of the pixels it covers is to be generated, so a masked
    pixel is never held at the known content.
    """
    generate = torch.nn.functional.adaptive_max_pool2d(mask.float(), tuple(size))  # (B, 1, h, w)
    return 1.0 - (generate > 0).float()
