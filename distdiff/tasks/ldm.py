"""Stage 2a: the DDPM epsilon-prediction step on scaled latents."""

from __future__ import annotations

from typing import Callable, Dict, Optional

import torch

from distdiff.diffusion import Schedule, q_sample
from distdiff.diffusion.rng import GeneratorLike, randint, randn
from distdiff.losses.diffusion import eps_mse_loss
from distdiff.tasks.base import Updater, check_finite
from distdiff.text import Tokenizer


def ddpm_loss(
    model: Callable[..., torch.Tensor],
    schedule: Schedule,
    x0: torch.Tensor,
    t: Optional[torch.Tensor] = None,
    noise: Optional[torch.Tensor] = None,
    generator: GeneratorLike = None,
    model_kwargs: Optional[Dict] = None,
) -> torch.Tensor:
    """Algorithm 1 of Ho et al.: || eps - model(sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, t) ||^2.

    Args:
        model: eps-prediction network ``model(x_t, t, **model_kwargs)``.
        schedule: the diffusion schedule.
        x0: (B, C, H, W) clean data (pixels or VAE latents).
        t: int64 (B,) steps; drawn uniformly from [0, T) with ``generator`` when None.
        noise: (B, C, H, W) eps; drawn from N(0, I) with ``generator`` (after t) when None.
        generator: None, a ``torch.Generator`` or one generator per sample.
        model_kwargs: extra keyword arguments for the model (e.g. ``{"y": labels}``).

    Returns:
        Scalar MSE, averaged over all elements.
    """
    if t is None:
        t = randint(schedule.num_steps, x0.shape[0], generator, device=x0.device)
    if noise is None:
        noise = randn(x0.shape, generator, device=x0.device, dtype=x0.dtype)
    x_t = q_sample(schedule, x0, t, noise)
    eps_pred = model(x_t, t, **(model_kwargs or {}))
    return eps_mse_loss(eps_pred, noise)


class LDMTask:
    """Algorithm 1 of Ho et al. (2020) on z0, with optional label or caption dropout for classifier-free
    guidance.

    Args:
        schedule: the DDPM schedule.
        num_classes: None for an unconditional U-Net; otherwise the label count (label `num_classes`
            is the null label).
        label_dropout: probability of replacing a label by the null label.
        tokenizer: for a text-conditioned U-Net, turns the batch's captions ("txt") into token ids.
        caption_dropout: probability of replacing a caption by the empty one (the null condition).
    """

    networks = ("unet",)

    def __init__(self, schedule: Schedule, num_classes: int | None = None, label_dropout: float = 0.1,
                 tokenizer: Tokenizer | None = None, caption_dropout: float = 0.1):
        self.schedule = schedule
        self.num_classes = num_classes
        self.label_dropout = label_dropout
        self.tokenizer = tokenizer
        self.caption_dropout = caption_dropout

    def _captions(self, captions: list[str], device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
        """Token ids (B, L) of the captions, each replaced by the empty caption with `caption_dropout`."""
        tokens = self.tokenizer.encode(captions).to(device)  # (B, L)
        drop = torch.rand((len(captions),), generator=generator, device=device) < self.caption_dropout  # (B,)
        return torch.where(drop[:, None], self.tokenizer.null().to(device), tokens)

    def _labels(self, labels: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        drop = torch.rand(labels.shape, generator=generator, device=labels.device) < self.label_dropout
        return torch.where(drop, torch.full_like(labels, self.num_classes), labels)

    def step(self, z0: torch.Tensor, batch: dict, updater: Updater, step: int, generator) -> dict[str, float]:
        """One optimizer step of the U-Net on latents z0 (B, c, h, w) (labels from `batch`); returns metrics."""
        kwargs = {}
        if self.num_classes is not None:
            kwargs["y"] = self._labels(batch["label"].to(z0.device), generator)
        if self.tokenizer is not None:
            kwargs["text"] = self._captions(batch["txt"], z0.device, generator)
        loss = ddpm_loss(updater.module("unet"), self.schedule, z0, generator=generator, model_kwargs=kwargs)
        check_finite("ldm loss", loss)
        stats = updater.update("unet", loss)
        return {"ldm/loss": float(loss.detach()), **{f"ldm/{k}": v for k, v in stats.items()}}
