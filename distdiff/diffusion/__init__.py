"""Diffusion math as pure functions over a float64 ``Schedule``; networks are callables passed in.

t is an int64 (B,) tensor in [0, T), t = 0 the least noisy step.
"""

from distdiff.diffusion.ddgan import ddgan_posterior_sample, ddgan_q_sample_pairs, ddgan_sample
from distdiff.diffusion.ddpm import (
    classifier_free_guidance,
    ddim_sample,
    ddim_step,
    ddim_timesteps,
    ddpm_sample,
    ddpm_step,
    posterior_mean_variance,
    predict_eps_from_x0,
    predict_x0_from_eps,
    q_sample,
)
from distdiff.diffusion.rng import per_sample_generators, randint, randn
from distdiff.diffusion.schedules import Schedule, ScheduleSpec, ddgan_schedule, ddpm_schedule, extract, vp_alpha_bar

__all__ = [
    "Schedule",
    "ScheduleSpec",
    "ddpm_schedule",
    "ddgan_schedule",
    "vp_alpha_bar",
    "extract",
    "randn",
    "randint",
    "per_sample_generators",
    "q_sample",
    "predict_x0_from_eps",
    "predict_eps_from_x0",
    "posterior_mean_variance",
    "ddpm_step",
    "ddpm_sample",
    "ddim_timesteps",
    "ddim_step",
    "ddim_sample",
    "classifier_free_guidance",
    "ddgan_q_sample_pairs",
    "ddgan_posterior_sample",
    "ddgan_sample",
]
