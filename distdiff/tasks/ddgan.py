"""Stage 2b: one Denoising Diffusion GAN step (discriminator, then generator).

Follows Xiao, Kreis and Vahdat (ICLR 2022): the discriminator sees real pairs (x_t, x_{t+1}) and
fake pairs where x_t is drawn from the posterior q(x_t | x_{t+1}, x0_pred) around the generator's
x0 prediction; non-saturating losses; lazy R1 on the real x_t.

R1 as the official training script applies it ("official", the default): every `lazy_reg`-th
discriminator step adds r1_gamma / 2 * E||grad_x D(x_t)||^2, not multiplied by `lazy_reg`.
StyleGAN2 instead multiplies the lazy penalty by the interval to keep its average strength
("stylegan2"); at the CIFAR-10 defaults (lazy 15) that is 15 times the paper's penalty.
"""

from __future__ import annotations

import torch

from distdiff.diffusion import Schedule, ddgan_posterior_sample, ddgan_q_sample_pairs, randn
from distdiff.losses import d_loss_fake, d_loss_real, g_loss_nonsaturating, r1_penalty
from distdiff.tasks.base import Updater, check_finite, set_requires_grad

R1_SCALINGS = ("official", "stylegan2")


def r1_weight(r1_gamma: float, lazy_reg: int, scaling: str) -> float:
    """The factor multiplying E||grad_x D||^2 on the steps where R1 is applied.

    Args:
        r1_gamma: gamma of the R1 penalty gamma / 2 * E||grad||^2.
        lazy_reg: R1 is applied every `lazy_reg` discriminator steps.
        scaling: "official" (DDGAN's training script: gamma / 2) or "stylegan2" (gamma / 2 * lazy_reg).

    Returns:
        the weight.
    """
    if scaling not in R1_SCALINGS:
        raise ValueError(f"unknown R1 scaling {scaling!r}; valid: {', '.join(R1_SCALINGS)}")
    return 0.5 * r1_gamma * (lazy_reg if scaling == "stylegan2" else 1)


class DDGANTask:
    """Adversarial denoising with T large steps (T = 1: a conditional GAN from pure noise).

    Args:
        schedule: from `ddgan_schedule`.
        nz: size of the generator's latent z.
        r1_gamma: R1 weight (gamma; the penalty is gamma / 2 * E||grad||^2).
        lazy_reg: apply R1 every `lazy_reg` discriminator steps.
        r1_scaling: "official" or "stylegan2" (see the module docstring).
        name: the member's name: its networks are `<name>_g` and `<name>_d`, its metrics `<name>/...`.
    """

    def __init__(self, schedule: Schedule, nz: int, r1_gamma: float, lazy_reg: int, r1_scaling: str = "official",
                 name: str = "ddgan"):
        self.schedule = schedule
        self.nz = nz
        self.r1_gamma = r1_gamma
        self.lazy_reg = lazy_reg
        self.r1_weight = r1_weight(r1_gamma, lazy_reg, r1_scaling)
        self.name = name
        self.gen_name, self.disc_name = f"{name}_g", f"{name}_d"
        self.networks = (self.gen_name, self.disc_name)

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
        disc, gen = updater.module(self.disc_name), updater.module(self.gen_name)
        t, x_t, x_tp1, z = self._draw(x0, generator)
        use_r1 = self.r1_gamma > 0 and step % self.lazy_reg == 0
        x_t = x_t.detach().requires_grad_(use_r1)
        real_logits = disc(x_t, t, x_tp1)  # (B,)
        loss = d_loss_real(real_logits)
        metrics = {}
        if use_r1:
            r1 = r1_penalty(real_logits, x_t)
            loss = loss + self.r1_weight * r1
            metrics[f"{self.name}/r1"] = float(r1.detach())
        with torch.no_grad():
            fake_x_t = self._fake_x_t(gen, x_tp1, t, z, generator)
        fake_logits = disc(fake_x_t, t, x_tp1)
        loss = loss + d_loss_fake(fake_logits)
        check_finite(f"{self.name} discriminator loss", loss)
        stats = updater.update(self.disc_name, loss)
        metrics.update({
            f"{self.name}/d_loss": float(loss.detach()),
            f"{self.name}/d_real": float(real_logits.detach().mean()),
            f"{self.name}/d_fake": float(fake_logits.detach().mean()),
            **{f"{self.name}/d_{k}": v for k, v in stats.items()},
        })
        return metrics

    def generator_step(self, x0, updater: Updater, generator) -> dict[str, float]:
        """One generator update against the current discriminator (its weights frozen)."""
        disc, gen = updater.module(self.disc_name), updater.module(self.gen_name)
        t, _, x_tp1, z = self._draw(x0, generator)
        set_requires_grad(disc, False)
        try:
            loss = g_loss_nonsaturating(disc(self._fake_x_t(gen, x_tp1, t, z, generator), t, x_tp1))
            check_finite(f"{self.name} generator loss", loss)
            stats = updater.update(self.gen_name, loss)
        finally:
            set_requires_grad(disc, True)
        return {f"{self.name}/g_loss": float(loss.detach()), **{f"{self.name}/g_{k}": v for k, v in stats.items()}}

    def step(self, x0: torch.Tensor, batch: dict, updater: Updater, step: int, generator) -> dict[str, float]:
        """Discriminator step then generator step on z0 / x0 (B, c, h, w); labels are not used."""
        metrics = self.discriminator_step(x0, updater, step, generator)
        metrics.update(self.generator_step(x0, updater, generator))
        return metrics
