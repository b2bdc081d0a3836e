"""The sampler registry and the object that draws images from the models of a stage-2 export.

`SAMPLERS` maps a sampler name to what it needs: the kind of model it drives, its network
evaluations per sample (NFE), how it is named in reports and files, and the function that runs it.
The training grids, `summary.json`, the evaluator and every command that samples read this one
table; adding a sampler is a function here and its entry.

`Stage2Sampler` draws images with one seed per sample: sample i depends only on its seed, never on
the batch it was drawn in, so grids, timings and evaluations agree however they are batched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from distdiff.diffusion import (
    Schedule,
    classifier_free_guidance,
    ddgan_sample,
    ddim_sample,
    ddim_timesteps,
    ddpm_sample,
    per_sample_generators,
)
from distdiff.diffusion.edit import keep_known, noise_to, strength_start
from distdiff.tasks.latents import LatentSource
from distdiff.tasks.spec import ModelSpec, SamplerSpec, Stage2Spec
from distdiff.text import Tokenizer


@dataclass(frozen=True)
class SamplerKind:
    """A registered sampler.

    Args:
        name: registry key.
        model_kind: the `ModelSpec.kind` it samples.
        timesteps: (schedule, settings) -> the descending steps it runs, one network evaluation each.
        run: (net, schedule, shape, rngs, device, settings, model_kwargs, nz, progress, x_T=, start_step=,
            after_step=) -> diffusion-space samples (the last three for editing; see `diffusion.edit`).
        title: how reports name it ("DDPM").
    """

    name: str
    model_kind: str
    timesteps: Callable[[Schedule, SamplerSpec], list[int]]
    run: Callable[..., torch.Tensor]
    title: str

    def nfe(self, schedule: Schedule, settings: SamplerSpec) -> int:
        """Network evaluations per sample."""
        return len(self.timesteps(schedule, settings))


def _run_ddpm(net, schedule, shape, rngs, device, settings, kwargs, nz, progress, **edit):
    return ddpm_sample(net, schedule, shape, generator=rngs, device=device, model_kwargs=kwargs, progress=progress,
                       **edit)


def _run_ddim(net, schedule, shape, rngs, device, settings, kwargs, nz, progress, **edit):
    return ddim_sample(net, schedule, shape, steps=settings.steps, eta=settings.eta, generator=rngs, device=device,
                       model_kwargs=kwargs, progress=progress, **edit)


def _run_ddgan(net, schedule, shape, rngs, device, settings, kwargs, nz, progress, **edit):
    return ddgan_sample(net, schedule, shape, nz, rng=rngs, device=device, **edit)


def _all_steps(schedule: Schedule, _settings: SamplerSpec) -> list[int]:
    return list(range(schedule.num_steps - 1, -1, -1))


SAMPLERS: dict[str, SamplerKind] = {
    "ddpm": SamplerKind("ddpm", "diffusion", _all_steps, _run_ddpm, "DDPM"),
    "ddim": SamplerKind("ddim", "diffusion", lambda s, c: ddim_timesteps(s.num_steps, c.steps), _run_ddim, "DDIM"),
    "ddgan": SamplerKind("ddgan", "ddgan", _all_steps, _run_ddgan, "DDGAN"),
}


@dataclass(frozen=True)
class Edit:
    """What image-to-image and inpainting start from (see `distdiff.diffusion.edit`).

    Args:
        init: (N, c, h, w) the init image(s) in diffusion space (`LatentSource.encode`).
        strength: S in [0, 1]: the share of the sampler's steps that run (0: init returned as is).
        keep: (N or 1, 1, h, w), 1 where init is kept (inpainting), or None.
    """

    init: torch.Tensor
    strength: float = 1.0
    keep: torch.Tensor | None = None


def sampler_kind(settings: SamplerSpec, model: ModelSpec) -> SamplerKind:
    """The registry entry of `settings`, checked against the model it would drive."""
    if settings.name not in SAMPLERS:
        raise ValueError(f"unknown sampler {settings.name!r}; valid: {', '.join(SAMPLERS)}")
    kind = SAMPLERS[settings.name]
    if kind.model_kind != model.kind:
        valid = [name for name, k in SAMPLERS.items() if k.model_kind == model.kind]
        raise ValueError(f"sampler {settings.name!r} cannot sample model {model.name!r} (a {model.kind} model); "
                         f"valid: {', '.join(valid)}")
    if settings.name == "ddim" and not (settings.steps and 1 <= settings.steps <= model.schedule.num_steps):
        raise ValueError(f"DDIM steps must be in [1, {model.schedule.num_steps}], got {settings.steps}")
    return kind


def sampler_nfe(model: ModelSpec, settings: SamplerSpec) -> int:
    """Network evaluations per sample of `model` under `settings` (the VAE decode not counted)."""
    return sampler_kind(settings, model).nfe(model.schedule.build(), settings)


def sampler_label(model: ModelSpec, settings: SamplerSpec) -> str:
    """Report name: "LDM DDPM-1000", "LDM DDIM-50 (eta 1)", "DDGAN-4", "GAN-1"."""
    kind, nfe = sampler_kind(settings, model), sampler_nfe(model, settings)
    if model.kind == "ddgan":
        return f"{model.name.upper()}-{nfe}"
    eta = f" (eta {settings.eta:g})" if settings.name == "ddim" and settings.eta else ""
    return f"{model.name.upper()} {kind.title}-{nfe}{eta}"


def sampler_key(model: ModelSpec, settings: SamplerSpec) -> str:
    """File-name safe key: "ldm-ddpm1000", "ldm-ddim50-eta1", "ddgan-4step", "gan-1step"."""
    nfe = sampler_nfe(model, settings)
    if model.kind == "ddgan":
        return f"{model.name}-{nfe}step"
    eta = f"-eta{settings.eta:g}" if settings.name == "ddim" and settings.eta else ""
    return f"{model.name}-{settings.name}{nfe}{eta}"


def select_samplers(spec: Stage2Spec, selection: str | Sequence[str] = "all") -> list[tuple[ModelSpec, SamplerSpec]]:
    """Parse a sampler selection against what an export holds.

    Args:
        spec: the export's record.
        selection: "all" (every model's default samplers) or items "MODEL" (its defaults),
            "MODEL:SAMPLER" (that sampler with the model's default settings for it) or
            "MODEL:ddim:STEPS"; a comma-separated string or a sequence.

    Returns:
        (model, sampler settings) pairs in the order given.
    """
    items = [s.strip() for s in (selection.split(",") if isinstance(selection, str) else selection) if s.strip()]
    if not items:
        raise ValueError("empty sampler selection; use 'all' or MODEL[:SAMPLER[:STEPS]] items")
    chosen: list[tuple[ModelSpec, SamplerSpec]] = []
    for item in items:
        if item == "all":
            chosen += [(m, s) for m in spec.models for s in m.samplers]
            continue
        name, _, rest = item.partition(":")
        model = spec.model(name)
        if not rest:
            chosen += [(model, s) for s in model.samplers]
            continue
        sampler, _, steps = rest.partition(":")
        default = next((s for s in model.samplers if s.name == sampler), SamplerSpec(sampler))
        settings = SamplerSpec(sampler, int(steps), default.eta) if steps else default
        sampler_kind(settings, model)
        chosen.append((model, settings))
    return chosen


class Stage2Sampler:
    """Draws images from the networks of a stage-2 run or export.

    Args:
        spec: what was trained.
        decoder: turns diffusion-space samples into images (the VAE, or a clamp in pixel space).
        networks: model name -> sampling network (EMA weights).
    """

    def __init__(self, spec: Stage2Spec, decoder: LatentSource, networks: dict[str, nn.Module]):
        missing = [m.name for m in spec.models if m.name not in networks]
        if missing:
            raise ValueError(f"no network for model(s) {', '.join(missing)}")
        self.spec, self.decoder, self.networks = spec, decoder, networks
        self._schedules = {m.name: m.schedule.build() for m in spec.models}
        self.tokenizer = Tokenizer.from_record(spec.text) if spec.text else None

    @property
    def num_conditions(self) -> int | None:
        """Classes a U-Net is conditioned on: its labels, or its record's class prompts (text), else None."""
        if self.tokenizer is not None:
            return len(self.spec.text["class_prompts"]) or None
        return self.spec.num_classes

    def default_samplers(self, skip: Sequence[str] = ()) -> list[tuple[ModelSpec, SamplerSpec]]:
        """Every model's default samplers, except those named in `skip`."""
        return [(m, s) for m in self.spec.models for s in m.samplers if s.name not in skip]

    def _condition(self, labels: torch.Tensor | None, prompts: Sequence[str] | None, device):
        """(keyword, condition, null condition) of the U-Net, or None when it is unconditional.

        A text-conditioned U-Net takes `prompts`, or the record's class prompt of each label."""
        if self.tokenizer is not None:
            if prompts is None:
                if labels is None or not self.spec.text["class_prompts"]:
                    raise ValueError("a text-conditioned U-Net needs prompts (or labels of its class prompts)")
                prompts = [self.spec.text["class_prompts"][i] for i in labels.tolist()]
            return "text", self.tokenizer.encode(list(prompts)).to(device), self.tokenizer.null()
        if prompts is not None:
            raise ValueError("prompts given to a U-Net that is not text-conditioned")
        if self.spec.num_classes is None:
            return None
        if labels is None:
            raise ValueError("a class-conditional U-Net needs labels to sample")
        return "y", labels, self.spec.num_classes

    def _model_call(self, model: ModelSpec, net: nn.Module, labels: torch.Tensor | None,
                    guidance: float | None = None, prompts: Sequence[str] | None = None):
        if model.kind != "diffusion":
            return net, {}
        condition = self._condition(labels, prompts, next(net.parameters()).device)
        if condition is None:
            return net, {}
        key, value, null = condition
        scale = self.spec.guidance_scale if guidance is None else guidance
        if scale == 1.0:
            return net, {key: value}
        return classifier_free_guidance(net, scale, null, key), {key: value}

    def class_labels(self, indices: Sequence[int]) -> torch.Tensor | None:
        """Balanced labels that depend on the sample index alone (index mod classes), or None.

        For a text-conditioned U-Net they index the class prompts of its record."""
        if self.num_conditions is None:
            return None
        device = next(next(iter(self.networks.values())).parameters()).device
        return torch.as_tensor(list(indices), device=device) % self.num_conditions

    @torch.no_grad()
    def warm_up(self, model: ModelSpec, batch_size: int) -> None:
        """One denoiser call and one decode at the shape of a batch, results discarded.

        oneDNN (and cuDNN) prepare their kernels for each new input shape on first use: a cost that a
        4-step sampler would carry almost in full in a timed batch and a 1000-step one spreads thin.
        Timing after this compares the samplers' steady speed. A second call takes an input in the
        memory layout of the network's own output: a channels-last network hands channels-last states to
        its later steps, and a compiled one recompiles for that stride on first sight.
        """
        net = self.networks[model.name]
        device = next(net.parameters()).device
        call, kwargs = self._model_call(model, net, self.class_labels(range(batch_size)))
        x = torch.zeros((batch_size, *self.spec.latent_shape), device=device)  # (B, c, h, w)
        t = torch.zeros(batch_size, dtype=torch.int64, device=device)
        extra = (torch.zeros(batch_size, model.nz, device=device),) if model.kind == "ddgan" else ()
        out = call(x, t, *extra, **kwargs)
        if not out.is_contiguous():
            call(torch.zeros_like(out, dtype=x.dtype), t, *extra, **kwargs)
        self.decoder.decode(x)

    @torch.no_grad()
    def sample(self, model: ModelSpec, settings: SamplerSpec, seeds: Sequence[int],
               labels: torch.Tensor | None = None, progress: bool = False, guidance: float | None = None,
               edit: Edit | None = None, prompts: Sequence[str] | None = None) -> torch.Tensor:
        """Images (N, C, H, W) in [-1, 1], one per seed.

        Args:
            model: which model (from `spec.models`).
            settings: sampler and settings (from `select_samplers` or the model's defaults).
            seeds: one seed per sample.
            labels: class labels (N,) for a class-conditional U-Net.
            progress: show the sampler's progress bar.
            guidance: classifier-free guidance scale (default: the export's).
            edit: start from an init image (image-to-image, inpainting) instead of pure noise.
            prompts: one caption per sample for a text-conditioned U-Net (default: the class prompt
                of each label).
        """
        kind = sampler_kind(settings, model)
        net = self.networks[model.name]
        device = next(net.parameters()).device
        call, kwargs = self._model_call(model, net, labels, guidance, prompts)
        shape = (len(seeds), *self.spec.latent_shape)
        schedule, rngs = self._schedules[model.name], per_sample_generators(list(seeds), device)
        if edit is None:
            z = kind.run(call, schedule, shape, rngs, device, settings, kwargs, model.nz, progress)
            return self.decoder.decode(z)
        init = edit.init.to(device).expand(shape)  # (N, c, h, w)
        start = strength_start(kind.timesteps(schedule, settings), edit.strength)
        if start is None:
            return self.decoder.decode(init)
        x_start = noise_to(schedule, init, start, rngs)  # (N, c, h, w) at noise level `start`
        hook = None if edit.keep is None else keep_known(schedule, init, edit.keep.to(device), rngs)
        z = kind.run(call, schedule, shape, rngs, device, settings, kwargs, model.nz, progress,
                     x_T=x_start, start_step=start, after_step=hook)
        return self.decoder.decode(z)
