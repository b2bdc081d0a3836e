"""Stage 2b: one Denoising Diffusion GAN step (discriminator, then generator).

Follows Xiao, Kreis and Vahdat (ICLR 2022): the discriminator sees real pairs (x_t, x_{t+1}) and
fake pairs where x_t is drawn from the posterior q(x_t | x_{t+1}, x0_pred) around the generator's
x0 prediction; non-saturating losses; lazy R1 on the real x_t.
"""

from __future__ import annotations

import torch

from distdiff.diffusion import Schedule, ddgan_posterior_sample, ddgan_q_sample_pairs, randn
from distdiff.losses import d_loss_fake, d_loss_real, g_loss_nonsaturating, r1_penalty
from distdiff.tasks.base import Updater, check_finite, set_requires_grad


class DDGANTask:
    """Adversarial denoising with T large steps.

    Args:
        schedule: from `ddgan_schedule`.
        nz: size of the generator's latent z.
        r1_gamma: R1 weight (gamma; the penalty is gamma / 2 * E||grad||^2).
        lazy_reg: apply R1 every `lazy_reg` discriminator steps, scaled by `lazy_reg`.
    """

    networks = ("ddgan_g", "ddgan_d")

    def __init__(self, schedule: Schedule, nz: int, r1_gamma: float, lazy_reg: int):
        self.schedule = schedule
        self.nz = nz
        self.r1_gamma = r1_gamma
        self.lazy_reg = lazy_reg

    def _draw(self, x0: torch.Tensor, generator):
        t = torch.randint(0, self.schedule.num_steps, (x0.shape[0],), generator=generator, device=x0.device)
        x_t, x_tp1 = ddgan_q_sample_pairs(self.schedule, x0, t, generator=generator)
        z = randn((x0.shape[0], self.nz), generator, device=x0.device, dtype=x0.dtype)
        return t, x_t, x_tp1, z

    def _fake_x_t(self, gen, x_tp1, t, z, generator) -> torch.Tensor:
        x0_pred = gen(x_tp1, t, z)  # (B, c, h, w)
        noise = randn(x_tp1.shape, generator, device=x_tp1.device, dtype=x_tp1.dtype)
        return ddgan_posterior_sample(self.schedule, x0_pred, x_tp1, t, noise)

    def discriminator_step(self, x0, updater: Updater, step: int, generator) -> dict[str, float]:
        """One discriminator update, with R1 every `lazy_reg` steps."""
        disc, gen = updater.module("ddgan_d"), updater.module("ddgan_g")
        t, x_t, x_tp1, z = self._draw(x0, generator)
        use_r1 = self.r1_gamma > 0 and step % self.lazy_reg == 0
        x_t = x_t.detach().requires_grad_(use_r1)
        real_logits = disc(x_t, t, x_tp1)  # (B,)
        loss = d_loss_real(real_logits)
        metrics = {}
        if use_r1:
            r1 = r1_penalty(real_logits, x_t)
            loss = loss + 0.5 * self.r1_gamma * self.lazy_reg * r1
            metrics["ddgan/r1"] = float(r1.detach())
        with torch.no_grad():
            fake_x_t = self._fake_x_t(gen, x_tp1, t, z, generator)
        fake_logits = disc(fake_x_t, t, x_tp1)
        loss = loss + d_loss_fake(fake_logits)
        check_finite("ddgan discriminator loss", loss)
        stats = updater.update("ddgan_d", loss)
        metrics.update({
            "ddgan/d_loss": float(loss.detach()),
            "ddgan/d_real": float(real_logits.detach().mean()),
            "ddgan/d_fake": float(fake_logits.detach().mean()),
            **{f"ddgan/d_{k}": v for k, v in stats.items()},
        })
        return metrics

    def generator_step(self, x0, updater: Updater, generator) -> dict[str, float]:
        """One generator update against the current discriminator (its weights frozen)."""
        disc, gen = updater.module("ddgan_d"), updater.module("ddgan_g")
        t, _, x_tp1, z = self._draw(x0, generator)
        set_requires_grad(disc, False)
        try:
            loss = g_loss_nonsaturating(disc(self._fake_x_t(gen, x_tp1, t, z, generator), t, x_tp1))
            check_finite("ddgan generator loss", loss)
            stats = updater.update("ddgan_g", loss)
        finally:
            set_requires_grad(disc, True)
        return {"ddgan/g_loss": float(loss.detach()), **{f"ddgan/g_{k}": v for k, v in stats.items()}}

    def step(self, x0: torch.Tensor, updater: Updater, step: int, generator) -> dict[str, float]:
        """Discriminator step then generator step on z0 / x0 (B, c, h, w)."""
        metrics = self.discriminator_step(x0, updater, step, generator)
        metrics.update(self.generator_step(x0, updater, generator))
        return metrics
