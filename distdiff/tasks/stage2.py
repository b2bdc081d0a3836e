"""Wiring stage 2 from a run config: its members, their networks, the joint task and the export record.

Stage 2 trains any set of members on one latent stream. Each member is a config section of the run:
`ldm` (a DDPM U-Net), `ddgan` (a Denoising Diffusion GAN) and `gan` (the same networks and losses
with T = 1: the one-step GAN baseline). `build_stage2` is the one place that turns those sections
into networks, tasks and the `Stage2Spec`; the trainer, the benchmarks and the tests call it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

from torch import nn

from distdiff.config import DDGANConfig, LDMConfig, OptimConfig, RunConfig
from distdiff.diffusion import ScheduleSpec
from distdiff.models import build_model, ddgan_num_timesteps
from distdiff.tasks.ddgan import DDGANTask
from distdiff.tasks.joint import JointLatentTask
from distdiff.tasks.latents import LatentSource
from distdiff.tasks.ldm import LDMTask
from distdiff.tasks.spec import ModelSpec, SamplerSpec, Stage2Spec
from distdiff.text import Tokenizer

MEMBERS = ("ldm", "ddgan", "gan")  # config sections that can train in stage 2, in report order


@dataclass
class NetworkPlan:
    """One trainable network: the module, its optimizer and, if it samples, its EMA decay."""

    module: nn.Module
    optim: OptimConfig
    optimizer: str  # "adam" or "adamw"
    ema_decay: float | None
    export_name: str  # weight stem in the export folder
    # True for a network whose loss differentiates through its own backward pass (a discriminator's R1):
    # compiled graphs do not support that, so it runs eagerly on the fast path.
    double_backward: bool = False


@dataclass
class Member:
    """A stage-2 member: its task, its networks (by engine name) and what it exports."""

    task: object
    networks: dict[str, NetworkPlan]
    model: ModelSpec
    sampling_network: str  # the engine whose EMA weights sample


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _text_kwargs(cfg: LDMConfig, tokenizer: Tokenizer | None) -> dict:
    """The U-Net's text encoder and cross-attention arguments (none without a tokenizer)."""
    if tokenizer is None:
        return {}
    encoder = dict(vocab_size=tokenizer.size, max_length=tokenizer.max_length, width=cfg.text.width,
                   layers=cfg.text.layers, heads=cfg.text.heads)
    return {"text_encoder": encoder, "cross_attention_levels": tuple(cfg.text.cross_attention_levels)}


def _ldm_member(cfg: LDMConfig, channels: int, num_classes: int | None, tokenizer: Tokenizer | None = None) -> Member:
    unet = build_model("unet", cfg.preset, in_channels=channels, num_classes=num_classes,
                       **_text_kwargs(cfg, tokenizer))
    schedule = ScheduleSpec(cfg.schedule, cfg.num_steps, beta_start=cfg.beta_start, beta_end=cfg.beta_end)
    samplers = (SamplerSpec("ddpm"), SamplerSpec("ddim", cfg.ddim_steps, cfg.ddim_eta))
    model = ModelSpec("ldm", "diffusion", "unet", schedule, samplers, parameters=count_parameters(unet))
    task = LDMTask(schedule.build(), num_classes, cfg.label_dropout, tokenizer, cfg.text.caption_dropout)
    return Member(task, {"unet": NetworkPlan(unet, cfg.optim, "adamw", cfg.ema_decay, "unet")}, model, "unet")


def _gan_member(name: str, cfg: DDGANConfig, channels: int) -> Member:
    gen = build_model("ddgan_generator", cfg.preset, in_channels=channels)
    disc = build_model("ddgan_discriminator", cfg.preset, in_channels=channels)
    nz = gen.model_config["kwargs"]["nz"]
    steps = cfg.num_steps or ddgan_num_timesteps(cfg.preset)
    schedule = ScheduleSpec("vp", steps, beta_min=cfg.beta_min, beta_max=cfg.beta_max)
    model = ModelSpec(name, "ddgan", f"{name}_generator", schedule, (SamplerSpec("ddgan"),), nz,
                      count_parameters(gen))
    task = DDGANTask(schedule.build(), nz, cfg.r1_gamma, cfg.lazy_reg, cfg.r1_scaling, name=name)
    networks = {
        task.gen_name: NetworkPlan(gen, cfg.g_optim, "adam", cfg.ema_decay, f"{name}_generator"),
        task.disc_name: NetworkPlan(disc, cfg.d_optim, "adam", None, f"{name}_discriminator", double_backward=True),
    }
    return Member(task, networks, model, task.gen_name)


def enabled_members(cfg: RunConfig) -> list[str]:
    """Names of the stage-2 members the config switches on, in report order."""
    return [name for name in MEMBERS if getattr(cfg, name).enabled]


@dataclass
class Stage2Setup:
    """Everything stage 2 trains, before engines wrap the networks."""

    members: dict[str, Member]
    task: JointLatentTask
    spec: Stage2Spec

    @property
    def networks(self) -> dict[str, NetworkPlan]:
        return {name: plan for m in self.members.values() for name, plan in m.networks.items()}

    @property
    def eager_networks(self) -> frozenset[str]:
        """Networks the fast path must not compile (`NetworkPlan.double_backward`)."""
        return frozenset(name for name, plan in self.networks.items() if plan.double_backward)


def with_decay_steps(optim: OptimConfig, steps: int) -> OptimConfig:
    """`optim` with a cosine schedule's `decay_steps` resolved to the stage length when left at 0."""
    return replace(optim, decay_steps=steps) if optim.schedule == "cosine" and not optim.decay_steps else optim


def build_stage2(cfg: RunConfig, latents: LatentSource, image_shape: tuple[int, int, int],
                 latent_shape: tuple[int, int, int], num_classes: int | None,
                 on_member: Callable[[str], None] | None = None, captions: dict | None = None) -> Stage2Setup:
    """Build the enabled members of `cfg` for diffusion-space tensors of `latent_shape`.

    Args:
        cfg: the run config.
        latents: encoder of batches and decoder of samples.
        image_shape: (C, H, W) of the images.
        latent_shape: (c, h, w) the members train on.
        num_classes: classes for a class-conditional U-Net (None: unconditional).
        on_member: called with each member's name before its networks are built (to seed them).
        captions: the data's caption record (`distdiff.text.caption_record`), needed when
            `ldm.text.enabled`: the U-Net's tokenizer is built from it and the export records it.

    Returns:
        the setup; networks are on the CPU.
    """
    text = captions if cfg.ldm.enabled and cfg.ldm.text.enabled else None
    if cfg.ldm.enabled and cfg.ldm.text.enabled and not captions:
        raise ValueError("ldm.text.enabled, but the data has no captions (no txt members in its shards)")
    tokenizer = Tokenizer.from_record(text) if text else None
    members = {}
    for name in enabled_members(cfg):
        if on_member is not None:
            on_member(name)
        members[name] = (_ldm_member(cfg.ldm, latent_shape[0], num_classes, tokenizer) if name == "ldm"
                         else _gan_member(name, getattr(cfg, name), latent_shape[0]))
    for member in members.values():
        for plan in member.networks.values():
            plan.optim = with_decay_steps(plan.optim, cfg.stage2.steps)
    spec = Stage2Spec(cfg.space, tuple(image_shape), tuple(latent_shape), tuple(m.model for m in members.values()),
                      num_classes, cfg.ldm.guidance_scale, "vae" if cfg.space == "latent" else None, text=text)
    task = JointLatentTask(latents, {name: m.task for name, m in members.items()})
    return Stage2Setup(members, task, spec)
