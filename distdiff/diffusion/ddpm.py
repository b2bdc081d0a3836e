"""DDPM training and sampling, and DDIM sampling, as pure functions over a ``Schedule``.

The network is any callable ``model(x_t, t, **model_kwargs) -> eps`` (B, C, H, W).
Formulas (Ho et al. 2020; Song et al. 2021), abar = alphas_cumprod:
    q_sample:   x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps
    x0 from eps: x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)
    DDPM step:  x_{t-1} = (x_t - beta_t / sqrt(1 - abar_t) eps) / sqrt(alpha_t) + sigma_t z,
                sigma_t^2 = beta_t or beta_tilde_t, and no noise at t = 0
    DDIM step:  x_s = sqrt(abar_s) x0 + sqrt(1 - abar_s - sigma^2) eps + sigma z, s < t, with
                sigma = eta sqrt((1 - abar_s) / (1 - abar_t)) sqrt(1 - abar_t / abar_s)
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch

from distdiff.diffusion.rng import GeneratorLike, randn
from distdiff.diffusion.schedules import Schedule, extract

Model = Callable[..., torch.Tensor]
Device = Optional[Union[str, torch.device]]
StepHook = Callable[[torch.Tensor, int], torch.Tensor]  # (x now at noise level `step`, step) -> x; -1 = clean


def q_sample(schedule: Schedule, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Draw x_t ~ q(x_t | x0): x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise.

    Args:
        schedule: the diffusion schedule.
        x0: (B, C, H, W) clean data.
        t: int64 (B,) steps.
        noise: (B, C, H, W) standard normal noise.

    Returns:
        x_t, (B, C, H, W).
    """
    return (
        extract(schedule.sqrt_alphas_cumprod, t, x0) * x0
        + extract(schedule.sqrt_one_minus_alphas_cumprod, t, x0) * noise
    )


def predict_x0_from_eps(schedule: Schedule, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t).

    Args:
        schedule: the diffusion schedule.
        x_t: (B, C, H, W) noisy input.
        t: int64 (B,) steps.
        eps: (B, C, H, W) (predicted) noise.

    Returns:
        x0 estimate, (B, C, H, W).
    """
    abar = schedule.alphas_cumprod
    return extract((1.0 / abar).sqrt(), t, x_t) * x_t - extract((1.0 / abar - 1.0).sqrt(), t, x_t) * eps


def predict_eps_from_x0(schedule: Schedule, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """eps = (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t).

    Args:
        schedule: the diffusion schedule.
        x_t: (B, C, H, W) noisy input.
        t: int64 (B,) steps.
        x0: (B, C, H, W) (predicted) clean data.

    Returns:
        eps estimate, (B, C, H, W).
    """
    return (x_t - extract(schedule.sqrt_alphas_cumprod, t, x_t) * x0) / extract(
        schedule.sqrt_one_minus_alphas_cumprod, t, x_t
    )


def posterior_mean_variance(
    schedule: Schedule, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The Gaussian posterior q(x_{t-1} | x_t, x0).

    mean = coef1_t x0 + coef2_t x_t, variance = beta_tilde_t (see ``schedules``).

    Args:
        schedule: the diffusion schedule.
        x0: (B, C, H, W) clean data (or its estimate).
        x_t: (B, C, H, W) noisy input.
        t: int64 (B,) steps.

    Returns:
        (mean (B, C, H, W), variance (B, 1, 1, 1), log_variance_clipped (B, 1, 1, 1)).
    """
    mean = extract(schedule.posterior_mean_coef1, t, x_t) * x0 + extract(schedule.posterior_mean_coef2, t, x_t) * x_t
    var = extract(schedule.posterior_variance, t, x_t)
    log_var = extract(schedule.posterior_log_variance_clipped, t, x_t)
    return mean, var, log_var


def _nonzero_mask(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B, 1, ..., 1) mask that is 0 where t == 0, so the last step adds no noise."""
    return (t != 0).to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))


def ddpm_step(
    schedule: Schedule,
    eps_pred: torch.Tensor,
    x_t: torch.Tensor,
    t: torch.Tensor,
    noise: Optional[torch.Tensor],
    variance: str = "beta",
) -> torch.Tensor:
    """One line of Algorithm 2 of Ho et al.: x_{t-1} from x_t.

    x_{t-1} = (x_t - beta_t / sqrt(1 - abar_t) eps_pred) / sqrt(alpha_t) + sigma_t noise,
    with the noise term dropped for the samples where t == 0.

    Args:
        schedule: the diffusion schedule.
        eps_pred: (B, C, H, W) predicted noise.
        x_t: (B, C, H, W) current sample.
        t: int64 (B,) current steps.
        noise: (B, C, H, W) standard normal noise, or None for the mean only.
        variance: "beta" (sigma_t^2 = beta_t) or "posterior" (sigma_t^2 = beta_tilde_t).

    Returns:
        x_{t-1}, (B, C, H, W).
    """
    if variance == "beta":
        sigma_table = schedule.betas.sqrt()
    elif variance == "posterior":
        sigma_table = schedule.posterior_variance.sqrt()
    else:
        raise ValueError(f"unknown variance {variance!r}; expected 'beta' or 'posterior'")
    eps_coef = schedule.betas / schedule.sqrt_one_minus_alphas_cumprod  # beta_t / sqrt(1 - abar_t)
    mean = extract(1.0 / schedule.alphas.sqrt(), t, x_t) * (x_t - extract(eps_coef, t, x_t) * eps_pred)
    if noise is None:
        return mean
    return mean + _nonzero_mask(t, x_t) * extract(sigma_table, t, x_t) * noise


def _progress(iterable, enabled: bool, desc: str):
    if not enabled:
        return iterable
    from distdiff.console import progress_bar

    return progress_bar(iterable, desc=desc)


def _initial_noise(shape, generator, device, dtype, x_T):
    if x_T is not None:
        return x_T.to(device=device, dtype=dtype) if device is not None else x_T.to(dtype=dtype)
    return randn(shape, generator, device=device, dtype=dtype)


def _denoise(model, x, timesteps: List[int], model_kwargs, progress: bool, desc: str, update,
             after_step: Optional[StepHook] = None) -> torch.Tensor:
    """The loop both samplers share: for each step t (next step t_prev, -1 after the last) one model
    call, then ``x = update(x, eps, t, t_prev)`` with t an int64 (B,) tensor and t_prev an int, then
    ``x = after_step(x, t_prev)`` when given (inpainting puts the known region back there)."""
    kwargs = model_kwargs or {}
    for i, prev in _progress(list(zip(timesteps, timesteps[1:] + [-1])), progress, desc):
        t = torch.full((x.shape[0],), i, dtype=torch.int64, device=x.device)
        x = update(x, model(x, t, **kwargs), t, prev)
        if after_step is not None:
            x = after_step(x, prev)
    return x


def steps_from(timesteps: List[int], start_step: Optional[int]) -> List[int]:
    """The descending ``timesteps`` a sampler runs when its input x_T sits at noise level ``start_step``.

    None keeps them all. Otherwise the steps after ``start_step`` are dropped and ``start_step``
    itself leads (added when it is not on the grid: DDIM can leave from any step).

    Args:
        timesteps: descending steps of the full sampler.
        start_step: noise level of the starting sample, in [0, timesteps[0]], or None.

    Returns:
        Descending steps, the first being ``start_step`` (or timesteps[0]).
    """
    if start_step is None:
        return list(timesteps)
    if not 0 <= start_step <= timesteps[0]:
        raise ValueError(f"start_step must be in [0, {timesteps[0]}], got {start_step}")
    return [start_step] + [t for t in timesteps if t < start_step]


@torch.no_grad()
def ddpm_sample(
    model: Model,
    schedule: Schedule,
    shape: Sequence[int],
    generator: GeneratorLike = None,
    device: Device = None,
    model_kwargs: Optional[Dict] = None,
    variance: str = "beta",
    progress: bool = False,
    dtype: torch.dtype = torch.float32,
    x_T: Optional[torch.Tensor] = None,
    start_step: Optional[int] = None,
    after_step: Optional[StepHook] = None,
) -> torch.Tensor:
    """Ancestral sampling (Algorithm 2 of Ho et al.) through all T steps.

    Noise order per call: x_T, then one draw per step t = T-1..1 (none at t = 0), all from
    ``generator``; with per-sample generators a sample does not depend on the batch it is in.

    Args:
        model: eps-prediction network ``model(x_t, t, **model_kwargs)``.
        schedule: the diffusion schedule.
        shape: (B, C, H, W) of the samples.
        generator: None, a ``torch.Generator`` or one generator per sample.
        device: device of the samples (default: the generator's device, else CPU).
        model_kwargs: extra keyword arguments for the model (e.g. ``{"y": labels}``).
        variance: "beta" or "posterior" (see ``ddpm_step``).
        progress: show a tqdm progress bar.
        dtype: dtype of the samples.
        x_T: optional starting noise (B, C, H, W), used instead of drawing it.
        start_step: the noise level of ``x_T`` when it is not T-1 (image-to-image: the steps above
            it are skipped).
        after_step: ``after_step(x, step)`` after each update, x then at noise level step (-1: clean).

    Returns:
        x0 samples, (B, C, H, W).
    """

    def update(x, eps, t, prev):
        noise = randn(x.shape, generator, device=x.device, dtype=x.dtype) if prev >= 0 else None
        return ddpm_step(schedule, eps, x, t, noise, variance=variance)

    x = _initial_noise(shape, generator, device, dtype, x_T)  # (B, C, H, W)
    timesteps = steps_from(list(range(schedule.num_steps - 1, -1, -1)), start_step)
    return _denoise(model, x, timesteps, model_kwargs, progress, "ddpm", update, after_step)


def ddim_timesteps(num_steps: int, steps: int) -> List[int]:
    """Evenly spaced steps from T-1 down to 0 (both included), ``steps`` of them.

    Including T-1 makes the first step start where x_T ~ N(0, I) is actually correct.

    Args:
        num_steps: T of the schedule.
        steps: number of sampling steps, 1 <= steps <= T.

    Returns:
        Descending list of distinct step indices.
    """
    if not 1 <= steps <= num_steps:
        raise ValueError(f"DDIM steps must be in [1, {num_steps}], got {steps}")
    if steps == 1:
        return [num_steps - 1]
    grid = torch.linspace(0, num_steps - 1, steps, dtype=torch.float64).round().long().tolist()
    return sorted(set(grid), reverse=True)


def ddim_step(
    schedule: Schedule,
    eps_pred: torch.Tensor,
    x_t: torch.Tensor,
    t: torch.Tensor,
    t_prev: torch.Tensor,
    eta: float = 0.0,
    noise: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """One DDIM update from step t to an earlier step t_prev (t_prev = -1 means "clean", abar = 1).

    Args:
        schedule: the diffusion schedule.
        eps_pred: (B, C, H, W) predicted noise at (x_t, t).
        x_t: (B, C, H, W) current sample.
        t, t_prev: int64 (B,) current and target steps, t_prev < t.
        eta: 0 for deterministic DDIM, 1 for DDPM-like stochasticity.
        noise: (B, C, H, W) standard normal noise; required when eta > 0 and t_prev >= 0.

    Returns:
        x_{t_prev}, (B, C, H, W).
    """
    # abar with a leading 1 so that index t_prev + 1 = 0 means abar = 1 (no noise left).
    abar_ext = torch.cat([torch.ones(1, dtype=torch.float64), schedule.alphas_cumprod])
    abar_t = extract(abar_ext, t + 1, x_t)
    abar_s = extract(abar_ext, t_prev + 1, x_t)
    x0 = predict_x0_from_eps(schedule, x_t, t, eps_pred)
    sigma = eta * ((1 - abar_s) / (1 - abar_t) * (1 - abar_t / abar_s)).clamp(min=0).sqrt()
    x_prev = abar_s.sqrt() * x0 + (1 - abar_s - sigma**2).clamp(min=0).sqrt() * eps_pred
    if noise is not None:
        x_prev = x_prev + sigma * noise
    return x_prev


@torch.no_grad()
def ddim_sample(
    model: Model,
    schedule: Schedule,
    shape: Sequence[int],
    steps: int = 50,
    eta: float = 0.0,
    generator: GeneratorLike = None,
    device: Device = None,
    model_kwargs: Optional[Dict] = None,
    progress: bool = False,
    dtype: torch.dtype = torch.float32,
    x_T: Optional[torch.Tensor] = None,
    start_step: Optional[int] = None,
    after_step: Optional[StepHook] = None,
) -> torch.Tensor:
    """DDIM sampling (Song et al. 2021) on ``ddim_timesteps(T, steps)``.

    With eta = 0 the result is a deterministic function of x_T. Noise order: x_T, then (only
    when eta > 0) one draw per step except the last; so steps = T, eta = 1 draws exactly what
    ``ddpm_sample(variance="posterior")`` draws and gives the same samples.

    Args:
        model: eps-prediction network ``model(x_t, t, **model_kwargs)``.
        schedule: the diffusion schedule.
        shape: (B, C, H, W) of the samples.
        steps: number of network evaluations.
        eta: stochasticity (0 = deterministic DDIM, 1 = DDPM posterior variance).
        generator, device, model_kwargs, progress, dtype, x_T, start_step, after_step: as for
            ``ddpm_sample`` (with ``start_step`` the grid's later steps are kept).

    Returns:
        x0 samples, (B, C, H, W).
    """

    def update(x, eps, t, prev):
        noise = randn(x.shape, generator, device=x.device, dtype=x.dtype) if eta > 0 and prev >= 0 else None
        return ddim_step(schedule, eps, x, t, torch.full_like(t, prev), eta=eta, noise=noise)

    x = _initial_noise(shape, generator, device, dtype, x_T)  # (B, C, H, W)
    timesteps = steps_from(ddim_timesteps(schedule.num_steps, steps), start_step)
    return _denoise(model, x, timesteps, model_kwargs, progress, "ddim", update, after_step)


def classifier_free_guidance(model: Model, scale: float, null_label: Union[int, torch.Tensor],
                             key: str = "y") -> Callable[..., torch.Tensor]:
    """Wrap a conditional eps model for classifier-free guidance (Ho & Salimans 2022).

    eps = eps(x, t, null) + scale * (eps(x, t, c) - eps(x, t, null)); scale = 1 is the plain
    conditional model, scale = 0 the unconditional one. Both predictions come from one batched
    forward pass of size 2B.

    Args:
        model: ``model(x_t, t, **{key: condition}) -> eps``, trained with condition dropout to the null one.
        scale: guidance scale w.
        null_label: the null condition: a label index meaning "no class", or one condition row
            (e.g. the token ids of the empty caption, (L,)) broadcast over the batch.
        key: the keyword the model takes its condition by ("y": class labels, "text": token ids).

    Returns:
        Callable ``(x_t, t, **{key: c}) -> eps`` usable as a sampler's model with ``model_kwargs={key: c}``.
    """

    def guided(x_t: torch.Tensor, t: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
        cond = kwargs[key]  # (B,) labels or (B, L) tokens
        null = (torch.full_like(cond, null_label) if isinstance(null_label, int)
                else null_label.to(cond.device).expand_as(cond))
        x_in = torch.cat([x_t, x_t])  # (2B, C, H, W)
        t_in = torch.cat([t, t])  # (2B,)
        eps_cond, eps_uncond = model(x_in, t_in, **{key: torch.cat([cond, null])}).chunk(2)
        return eps_uncond + scale * (eps_cond - eps_uncond)

    return guided
