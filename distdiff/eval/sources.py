"""Sample sources: what the evaluator draws images from, one seed per global sample index.

A source has `key` (short, file-name safe), `label` (the table's model column), `nfe` (network
evaluations per sample of the denoiser, the VAE decode not counted), `image_shape` (C, H, W) and
`generate(indices, seeds) -> (B, C, H, W) in [-1, 1]`, where sample `indices[j]` must depend only
on `seeds[j]` (per-sample generators), never on the batch it was drawn in. Tests plug in synthetic
sources with the same members.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import torch

from distdiff.diffusion import ddim_timesteps


class SampleSource(Protocol):
    key: str
    label: str
    nfe: int
    image_shape: tuple[int, int, int]

    def generate(self, indices: Sequence[int], seeds: Sequence[int]) -> torch.Tensor:  # (B, C, H, W)
        ...


_SEED_STRIDE = 0x9E3779B1  # odd, ~2^32 / golden ratio: spreads base seeds far apart


def sample_seed(base_seed: int, index: int) -> int:
    """The seed of global sample `index` under `base_seed`.

    torch's CPU generator (mt19937) uses only the low 32 bits of a seed, so seeds are kept in
    [0, 2^32): for one base seed, distinct indices below 2^32 get distinct seeds, and different
    base seeds start their index runs ~2.6e9 apart.
    """
    return (index + base_seed * _SEED_STRIDE) % (1 << 32)


class LdmSource:
    """The latent-diffusion U-Net sampled with DDPM (all T steps) or DDIM (`steps` steps).

    Args:
        sampler: a `distdiff.tasks.LatentSampler` with a U-Net.
        image_shape: (C, H, W) of the decoded images.
        method: "ddpm" or "ddim".
        steps: DDIM steps (ignored for DDPM).
    """

    def __init__(self, sampler, image_shape, method: str = "ddim", steps: int = 50):
        if method not in ("ddpm", "ddim"):
            raise ValueError(f"unknown LDM sampler {method!r}; valid: ddpm, ddim")
        self.sampler, self.method, self.steps = sampler, method, steps
        self.image_shape = tuple(image_shape)
        total = sampler.ldm_schedule.num_steps
        self.nfe = total if method == "ddpm" else len(ddim_timesteps(total, steps))
        self.key = f"ldm-{method}{self.nfe}"
        self.label = f"LDM ({method.upper()}, {self.nfe} steps)"

    def generate(self, indices: Sequence[int], seeds: Sequence[int]) -> torch.Tensor:
        labels = None
        if self.sampler.num_classes is not None:
            # Class-balanced and a function of the index alone: label = index mod num_classes.
            device = next(self.sampler.unet.parameters()).device
            labels = torch.as_tensor(list(indices), device=device) % self.sampler.num_classes
        return self.sampler.sample_ldm(seeds, self.method, self.steps, labels)


class DdganSource:
    """The DDGAN generator: T generator evaluations per sample.

    Args:
        sampler: a `distdiff.tasks.LatentSampler` with a DDGAN generator.
        image_shape: (C, H, W) of the decoded images.
    """

    def __init__(self, sampler, image_shape):
        self.sampler = sampler
        self.image_shape = tuple(image_shape)
        self.nfe = sampler.ddgan_schedule.num_steps
        self.key = f"ddgan-{self.nfe}step"
        self.label = f"DDGAN ({self.nfe} steps)"

    def generate(self, indices: Sequence[int], seeds: Sequence[int]) -> torch.Tensor:
        return self.sampler.sample_ddgan(seeds)


def parse_ldm_samplers(spec: str, steps: int) -> list[tuple[str, int]]:
    """'ddim' / 'ddpm' / 'ddpm,ddim' -> [(method, steps), ...].

    Args:
        spec: comma-separated sampler names.
        steps: DDIM steps.

    Returns:
        list of (method, steps).
    """
    methods = [m.strip() for m in spec.split(",") if m.strip()]
    bad = [m for m in methods if m not in ("ddpm", "ddim")]
    if bad or not methods:
        raise ValueError(f"unknown LDM sampler(s) {bad or spec!r}; valid: ddpm, ddim (comma-separated)")
    return [(m, steps) for m in methods]


def checkpoint_sources(checkpoint, models: Sequence[str], ldm_samplers: Sequence[tuple[str, int]],
                       device: str | torch.device = "cpu") -> list:
    """The sample sources of an `EvalCheckpoint`.

    Args:
        checkpoint: an opened `distdiff.eval.checkpoint.EvalCheckpoint`.
        models: subset of ("ldm", "ddgan").
        ldm_samplers: (method, steps) pairs for the LDM.
        device: where the networks run.

    Returns:
        list of sources, LDM ones first.
    """
    sampler = checkpoint.build_sampler(device)
    sources: list = []
    if "ldm" in models:
        sources += [LdmSource(sampler, checkpoint.image_shape, method, steps) for method, steps in ldm_samplers]
    if "ddgan" in models:
        sources.append(DdganSource(sampler, checkpoint.image_shape))
    return sources
