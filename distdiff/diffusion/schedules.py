"""Noise schedules: float64 tables for discrete Gaussian diffusion.

Notation (Ho et al. 2020), index t in [0, T), t = 0 the least noisy step:
    alpha_t = 1 - beta_t,            abar_t = prod_{s<=t} alpha_s,     abar_prev_t = abar_{t-1} (abar_prev_0 = 1)
    q(x_t | x0)       = N(sqrt(abar_t) x0, (1 - abar_t) I)
    q(x_{t-1} | x_t, x0) = N(coef1_t x0 + coef2_t x_t, beta_tilde_t I) with
        coef1_t = beta_t sqrt(abar_prev_t) / (1 - abar_t)
        coef2_t = (1 - abar_prev_t) sqrt(alpha_t) / (1 - abar_t)
        beta_tilde_t = beta_t (1 - abar_prev_t) / (1 - abar_t)       (= 0 at t = 0)

Tables stay float64 on the CPU; ``extract`` casts the entries it picks to the input's dtype and
device, so float32/bf16 training never accumulates rounding into the tables themselves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Schedule:
    """All per-step tables of a discrete diffusion, each a float64 tensor of shape (T,).

    Build with ``ddpm_schedule``, ``ddgan_schedule`` or ``Schedule.from_betas``.
    """

    num_steps: int
    betas: torch.Tensor
    alphas: torch.Tensor
    alphas_cumprod: torch.Tensor
    alphas_cumprod_prev: torch.Tensor
    sqrt_alphas_cumprod: torch.Tensor
    sqrt_one_minus_alphas_cumprod: torch.Tensor
    posterior_variance: torch.Tensor
    posterior_log_variance_clipped: torch.Tensor
    posterior_mean_coef1: torch.Tensor
    posterior_mean_coef2: torch.Tensor

    @classmethod
    def from_betas(cls, betas: torch.Tensor) -> "Schedule":
        """Derive every table from the T betas.

        Args:
            betas: (T,) tensor with values in (0, 1].

        Returns:
            Schedule with float64 CPU tables.
        """
        betas = torch.as_tensor(betas, dtype=torch.float64).detach().cpu().clone()
        if betas.ndim != 1 or betas.numel() == 0:
            raise ValueError(f"betas must be a non-empty 1-D tensor, got shape {tuple(betas.shape)}")
        if not bool(((betas > 0) & (betas <= 1)).all()):
            raise ValueError(f"betas must lie in (0, 1], got min {betas.min().item()}, max {betas.max().item()}")
        alphas = 1.0 - betas
        abar = torch.cumprod(alphas, dim=0)
        abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        post_var = betas * (1.0 - abar_prev) / (1.0 - abar)
        # beta_tilde_0 = 0; log(0) would be -inf, so (as in Ho et al.) the t = 0 entry borrows t = 1's.
        log_src = torch.cat([post_var[1:2], post_var[1:]]) if len(betas) > 1 else betas.clone()
        return cls(
            num_steps=len(betas),
            betas=betas,
            alphas=alphas,
            alphas_cumprod=abar,
            alphas_cumprod_prev=abar_prev,
            sqrt_alphas_cumprod=abar.sqrt(),
            sqrt_one_minus_alphas_cumprod=(1.0 - abar).sqrt(),
            posterior_variance=post_var,
            posterior_log_variance_clipped=log_src.log(),
            posterior_mean_coef1=betas * abar_prev.sqrt() / (1.0 - abar),
            posterior_mean_coef2=(1.0 - abar_prev) * alphas.sqrt() / (1.0 - abar),
        )


def extract(table: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Pick ``table[t]`` per sample, shaped to broadcast against ``x``.

    Args:
        table: (T,) float64 table.
        t: int64 (B,) step indices.
        x: tensor (B, ...) whose dtype and device the result takes.

    Returns:
        Tensor (B, 1, ..., 1) with ``x.ndim`` dimensions.
    """
    if t.ndim != 1 or t.shape[0] != x.shape[0]:
        raise ValueError(f"t must have shape (B,) = ({x.shape[0]},), got {tuple(t.shape)}")
    # Cast the (small) table to x's device and dtype, then index there: the values are rounded
    # once from float64, and t never leaves its device (no host sync per step on a GPU).
    picked = table.to(device=x.device, dtype=x.dtype)[t.to(x.device)]  # (B,)
    return picked.reshape(-1, *([1] * (x.ndim - 1)))


def ddpm_schedule(
    num_steps: int = 1000,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
    kind: str = "linear",
) -> Schedule:
    """The DDPM schedule.

    Args:
        num_steps: T.
        beta_start, beta_end: first and last beta of the linear schedule
            (beta_t = beta_start + t (beta_end - beta_start) / (T - 1)).
        kind: "linear" (Ho et al. 2020), "scaled_linear" (latent diffusion and Stable Diffusion:
            linear in sqrt(beta), beta_t = (sqrt(beta_start) + t (sqrt(beta_end) - sqrt(beta_start)) / (T - 1))^2)
            or "cosine" (Nichol & Dhariwal 2021: abar(t) = cos^2(((t/T + s) / (1 + s)) pi/2), s = 0.008,
            beta_t = 1 - abar(t+1)/abar(t) clipped to 0.999; beta_start/beta_end are ignored).

    Returns:
        Schedule.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if kind == "linear":
        betas = torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)
    elif kind == "scaled_linear":
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_steps, dtype=torch.float64) ** 2
    elif kind == "cosine":
        betas = _cosine_betas(num_steps)
    else:
        raise ValueError(f"unknown schedule kind {kind!r}; expected 'linear', 'scaled_linear' or 'cosine'")
    return Schedule.from_betas(betas)


def _cosine_betas(num_steps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    def abar(u: float) -> float:
        return math.cos((u + s) / (1.0 + s) * math.pi / 2.0) ** 2

    betas = [
        min(1.0 - abar((i + 1) / num_steps) / abar(i / num_steps), max_beta) for i in range(num_steps)
    ]
    return torch.tensor(betas, dtype=torch.float64)


def vp_alpha_bar(t: torch.Tensor, beta_min: float = 0.1, beta_max: float = 20.0) -> torch.Tensor:
    """Continuous VP-SDE signal level abar(t) = exp(-0.5 t^2 (beta_max - beta_min) - t beta_min).

    Args:
        t: continuous times in [0, 1].
        beta_min, beta_max: VP-SDE beta range.

    Returns:
        abar(t), same shape as ``t``.
    """
    t = torch.as_tensor(t, dtype=torch.float64)
    return torch.exp(-0.5 * t**2 * (beta_max - beta_min) - t * beta_min)


def ddgan_schedule(num_steps: int = 4, beta_min: float = 0.1, beta_max: float = 20.0) -> Schedule:
    """The DDGAN paper's discretised VP schedule (Xiao et al. 2022).

    Time grid t_i = (i / T)(1 - 1e-3) + 1e-3 for i = 0..T, and
    beta_i = 1 - abar(t_i) / abar(t_{i-1}) for i = 1..T, with ``vp_alpha_bar`` as abar.
    The official code prepends a dummy beta of 1e-8 for index 0; here only the T real betas
    are kept (index t of this schedule is the official code's t + 1).

    Because the grid starts at t_0 = 1e-3 rather than 0, the product of the real betas is
    ``alphas_cumprod[i] = abar(t_{i+1}) / abar(t_0)``, not abar(t_{i+1}) itself.

    Args:
        num_steps: T (DDGAN uses 2 or 4).
        beta_min, beta_max: VP-SDE beta range.

    Returns:
        Schedule.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    eps_small = 1e-3
    grid = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps * (1.0 - eps_small) + eps_small
    abar = vp_alpha_bar(grid, beta_min, beta_max)  # (T + 1,)
    betas = 1.0 - abar[1:] / abar[:-1]  # (T,)
    return Schedule.from_betas(betas)


SCHEDULE_KINDS = ("linear", "scaled_linear", "cosine", "vp")


@dataclass(frozen=True)
class ScheduleSpec:
    """What builds a schedule, as plain data that travels with an export.

    Args:
        kind: "linear", "scaled_linear" or "cosine" (DDPM over `num_steps` betas, see `ddpm_schedule`) or
            "vp" (the DDGAN paper's discretised VP-SDE, see `ddgan_schedule`).
        num_steps: T.
        beta_start, beta_end: first and last beta of the (scaled) linear schedules (ignored otherwise).
        beta_min, beta_max: the VP-SDE's beta range (kind "vp" only).
    """

    kind: str
    num_steps: int
    beta_start: float = 1e-4
    beta_end: float = 0.02
    beta_min: float = 0.1
    beta_max: float = 20.0

    def __post_init__(self):
        if self.kind not in SCHEDULE_KINDS:
            raise ValueError(f"unknown schedule kind {self.kind!r}; valid: {', '.join(SCHEDULE_KINDS)}")
        if self.num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {self.num_steps}")

    def build(self) -> Schedule:
        """The float64 schedule these settings describe."""
        if self.kind == "vp":
            return ddgan_schedule(self.num_steps, self.beta_min, self.beta_max)
        return ddpm_schedule(self.num_steps, self.beta_start, self.beta_end, kind=self.kind)

    def to_dict(self) -> dict:
        """The fields that matter for this kind, as plain data."""
        out: dict = {"kind": self.kind, "num_steps": self.num_steps}
        if self.kind in ("linear", "scaled_linear"):
            out.update(beta_start=self.beta_start, beta_end=self.beta_end)
        elif self.kind == "vp":
            out.update(beta_min=self.beta_min, beta_max=self.beta_max)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "ScheduleSpec":
        """Inverse of `to_dict`; unknown keys are an error."""
        unknown = sorted(set(data) - {"kind", "num_steps", "beta_start", "beta_end", "beta_min", "beta_max"})
        if unknown:
            raise ValueError(f"unknown schedule field(s) {', '.join(unknown)} in {data!r}")
        return cls(**data)
