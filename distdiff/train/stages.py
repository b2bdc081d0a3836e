"""Building the two training stages from a RunConfig, and exporting their results.

Stage 1 trains the KL-VAE on images and exports it with its latent scale factor. Stage 2 trains
the LDM U-Net and the DDGAN jointly on the VAE's latents. Engines come from a factory, so the same
builders serve the local trainer (plain PyTorch) and the Ray workers (DeepSpeed).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from distdiff.config import OptimConfig, RunConfig, dump_yaml
from distdiff.diffusion import ddgan_schedule, ddpm_schedule
from distdiff.models import build_model, ddgan_num_timesteps, load_weights, save_weights
from distdiff.tasks import DDGANTask, JointLatentTask, LatentSampler, LatentSource, LDMTask, VAETask
from distdiff.train.data_source import build_source_stream, describe_source
from distdiff.train.ema import EMA
from distdiff.train.engines import EngineSet
from distdiff.train.loop import StagePlan

EngineFactory = Callable[[str, nn.Module, OptimConfig, str], object]
SAMPLE_SEED_BASE = 10_000_000  # grid seeds, disjoint from anything training draws


def run_dir(cfg: RunConfig) -> Path:
    return Path(cfg.output_dir) / cfg.name


def vae_export_path(cfg: RunConfig) -> Path:
    """Where stage 2 finds the VAE: `vae.checkpoint`, else this run's own stage-1 export."""
    return Path(cfg.vae.checkpoint) if cfg.vae.checkpoint else run_dir(cfg) / "vae" / "export" / "vae"


def _eval_images(cfg: RunConfig, count: int) -> torch.Tensor:
    stream = build_source_stream(cfg.data, count, 0, 1, seed=cfg.seed + 1)
    return next(iter(stream))["image"]


def build_vae(cfg: RunConfig) -> nn.Module:
    """The stage-1 VAE for the data's channel count, decoding with the configured likelihood."""
    channels = describe_source(cfg.data).image_shape[0]
    return build_model("vae", cfg.vae.preset, in_channels=channels, likelihood=cfg.vae.likelihood)


def build_vae_plan(cfg: RunConfig, ctx, make_engine: EngineFactory) -> StagePlan:
    """Stage 1: the VAE, its ELBO task, the image stream and a reconstruction grid."""
    torch.manual_seed(cfg.seed)  # initial weights depend on the seed only, not on what ran before
    info = describe_source(cfg.data)
    vae = build_vae(cfg).to(ctx.device)
    engines = EngineSet({"vae": make_engine("vae", vae, cfg.vae.optim, "adamw")})
    task = VAETask(cfg.vae.kl_weight, cfg.vae.likelihood)
    originals = _eval_images(cfg, min(cfg.stage1.num_samples, 32)).to(ctx.device)

    @torch.no_grad()
    def reconstructions() -> dict[str, torch.Tensor]:
        vae.eval()
        mean, _ = vae.encode(originals)
        recon = vae.decode(mean).clamp(-1, 1)
        vae.train()
        pairs = torch.stack([originals, recon], dim=1).flatten(0, 1)  # (2N, C, H, W): original, recon
        return {"vae_reconstructions": pairs}

    return StagePlan(
        name="vae", engines=engines, emas={},
        step_fn=lambda batch, updater, step, gen: task.step(batch, updater, gen),
        stream=build_source_stream(cfg.data, cfg.stage1.batch_size, ctx.rank, ctx.world_size, cfg.seed),
        stage=cfg.stage1, seed=cfg.seed, stage_dir=run_dir(cfg) / "vae", precision=cfg.precision,
        config_yaml=dump_yaml(cfg), sample_fn=reconstructions,
        accumulation=cfg.distributed.gradient_accumulation_steps,
    )


@torch.no_grad()
def latent_scale_factor(vae: nn.Module, cfg: RunConfig, device: torch.device) -> float:
    """1 / std of posterior samples over `vae.scale_batches` batches of the data."""
    stream = iter(build_source_stream(cfg.data, cfg.stage1.batch_size, 0, 1, seed=cfg.seed + 2))
    g = torch.Generator(device=device).manual_seed(cfg.seed)
    vae.eval()
    samples = []
    for _ in range(cfg.vae.scale_batches):
        mean, logvar = vae.encode(next(stream)["image"].to(device))
        samples.append(vae.sample_latent(mean, logvar, generator=g).flatten().double())
    return float(1.0 / torch.cat(samples).std())


def export_vae(cfg: RunConfig, plan: StagePlan, device: torch.device) -> Path:
    """Set the latent scale factor on a fresh copy of the trained VAE and export it (rank 0)."""
    engine = plan.engines["vae"]
    vae = build_vae(cfg).to(device)
    vae.load_state_dict(engine.full_state_dict())
    scale = latent_scale_factor(vae, cfg, device)
    vae.scale_factor.fill_(scale)
    path = run_dir(cfg) / "vae" / "export" / "vae"
    save_weights(vae, path, metadata={"latent_scale_factor": scale, "likelihood": cfg.vae.likelihood})
    return path


def load_stage2_vae(cfg: RunConfig, device: torch.device) -> nn.Module | None:
    """The frozen VAE for stage 2, or None in pixel space."""
    if cfg.space == "pixel":
        return None
    path = vae_export_path(cfg)
    if not Path(str(path) + ".safetensors").exists() and not path.exists():
        raise FileNotFoundError(
            f"no trained VAE at {path}.safetensors: run stage 1 first (python launch/train_vae.py "
            f"--config ...) or set vae.checkpoint to exported VAE weights"
        )
    vae, _ = load_weights(path)
    return vae.to(device).eval().requires_grad_(False)


def _diffusion_shape(cfg: RunConfig, vae: nn.Module | None) -> tuple[int, int, int]:
    c, h, w = describe_source(cfg.data).image_shape
    if vae is None:
        return c, h, w
    f = vae.downsample_factor
    return vae.model_config["kwargs"]["latent_channels"], h // f, w // f


def _schedules(cfg: RunConfig):
    ldm = ddpm_schedule(cfg.ldm.num_steps, cfg.ldm.beta_start, cfg.ldm.beta_end, kind=cfg.ldm.schedule)
    steps = cfg.ddgan.num_steps or ddgan_num_timesteps(cfg.ddgan.preset)
    return ldm, ddgan_schedule(steps, cfg.ddgan.beta_min, cfg.ddgan.beta_max)


class Stage2Networks:
    """The stage-2 networks (those enabled), their engines and EMAs."""

    def __init__(self, cfg: RunConfig, ctx, make_engine: EngineFactory, channels: int, num_classes: int | None):
        nets = {}
        if cfg.ldm.enabled:
            nets["unet"] = (build_model("unet", cfg.ldm.preset, in_channels=channels, num_classes=num_classes),
                            cfg.ldm.optim, "adamw", cfg.ldm.ema_decay)
        if cfg.ddgan.enabled:
            nets["ddgan_g"] = (build_model("ddgan_generator", cfg.ddgan.preset, in_channels=channels),
                               cfg.ddgan.g_optim, "adam", cfg.ddgan.ema_decay)
            nets["ddgan_d"] = (build_model("ddgan_discriminator", cfg.ddgan.preset, in_channels=channels),
                               cfg.ddgan.d_optim, "adam", None)
        self.engines = EngineSet({name: make_engine(name, net.to(ctx.device), optim, kind)
                                  for name, (net, optim, kind, _) in nets.items()})
        self.emas = {name: EMA(self.engines[name].module, decay)
                     for name, (_, _, _, decay) in nets.items() if decay is not None}
        self.nz = nets["ddgan_g"][0].model_config["kwargs"]["nz"] if "ddgan_g" in nets else 100


def build_ldm_plan(cfg: RunConfig, ctx, make_engine: EngineFactory) -> tuple[StagePlan, LatentSampler]:
    """Stage 2: U-Net and DDGAN on one latent stream; returns the plan and an EMA sampler."""
    torch.manual_seed(cfg.seed + 1)  # initial weights depend on the seed only, not on what ran before
    vae = load_stage2_vae(cfg, ctx.device)
    shape = _diffusion_shape(cfg, vae)
    info = describe_source(cfg.data)
    num_classes = info.num_classes if cfg.ldm.class_conditional else None
    ldm_sched, gan_sched = _schedules(cfg)
    nets = Stage2Networks(cfg, ctx, make_engine, shape[0], num_classes)
    latents = LatentSource(vae)
    task = JointLatentTask(
        latents,
        LDMTask(ldm_sched, num_classes, cfg.ldm.label_dropout) if cfg.ldm.enabled else None,
        DDGANTask(gan_sched, nets.nz, cfg.ddgan.r1_gamma, cfg.ddgan.lazy_reg) if cfg.ddgan.enabled else None,
    )
    sampler = LatentSampler(
        latents, shape,
        unet=nets.emas["unet"].model if "unet" in nets.emas else None, ldm_schedule=ldm_sched,
        generator=nets.emas["ddgan_g"].model if "ddgan_g" in nets.emas else None,
        ddgan_schedule=gan_sched, nz=nets.nz, num_classes=num_classes, guidance_scale=cfg.ldm.guidance_scale,
    )
    plan = StagePlan(
        name="ldm", engines=nets.engines, emas=nets.emas, step_fn=task.step,
        stream=build_source_stream(cfg.data, cfg.stage2.batch_size, ctx.rank, ctx.world_size, cfg.seed),
        stage=cfg.stage2, seed=cfg.seed, stage_dir=run_dir(cfg) / "ldm", precision=cfg.precision,
        config_yaml=dump_yaml(cfg), sample_fn=lambda: grid_samples(cfg, sampler, cfg.stage2.num_samples),
        accumulation=cfg.distributed.gradient_accumulation_steps,
    )
    return plan, sampler


def _grid_labels(cfg: RunConfig, sampler: LatentSampler, n: int) -> torch.Tensor | None:
    if sampler.num_classes is None:
        return None
    device = next(sampler.unet.parameters()).device
    return torch.arange(n, device=device) % sampler.num_classes


def ddim_name(cfg: RunConfig) -> str:
    """Name of the LDM's fast sampler in grids and summaries, e.g. "ldm_ddim50" or "ldm_ddim50_eta1"."""
    name = f"ldm_ddim{cfg.ldm.ddim_steps}"
    return name if cfg.ldm.ddim_eta == 0 else f"{name}_eta{cfg.ldm.ddim_eta:g}"


def grid_samples(cfg: RunConfig, sampler: LatentSampler, n: int) -> dict[str, torch.Tensor]:
    """Periodic sample grids of the EMA models with fixed seeds: LDM with DDIM, and the DDGAN.

    The 1000-step ancestral DDPM grid is left to the end of the run (`time_samplers`): it costs as
    much as a few hundred training steps on a CPU.
    """
    seeds = range(SAMPLE_SEED_BASE, SAMPLE_SEED_BASE + n)
    grids = {}
    if sampler.unet is not None:
        labels = _grid_labels(cfg, sampler, n)
        grids[ddim_name(cfg)] = sampler.sample_ldm(seeds, "ddim", cfg.ldm.ddim_steps, labels, eta=cfg.ldm.ddim_eta)
    if sampler.generator is not None:
        grids[f"ddgan_{sampler.ddgan_schedule.num_steps}step"] = sampler.sample_ddgan(seeds)
    return grids


def export_stage2(cfg: RunConfig, plan: StagePlan, sampler: LatentSampler) -> Path:
    """Write raw and EMA weights plus `export.json` (what the evaluator and samplers load)."""
    out = run_dir(cfg) / "ldm" / "export"
    out.mkdir(parents=True, exist_ok=True)
    names = {"unet": "unet", "ddgan_g": "ddgan_generator", "ddgan_d": "ddgan_discriminator"}
    present = []
    for key, name in names.items():
        if key not in plan.engines.engines:
            continue
        model = build_model_like(plan.engines[key].module)
        model.load_state_dict(plan.engines[key].full_state_dict())
        save_weights(model, out / name)
        present.append(name)
        if key in plan.emas:
            save_weights(plan.emas[key].model, out / f"{name}_ema")
            present.append(f"{name}_ema")
    info = describe_source(cfg.data)
    meta = {
        "models": present,
        "vae": "vae" if cfg.space == "latent" else None,  # copied beside the other weights
        "space": cfg.space,
        "image_shape": list(info.image_shape),
        "latent_shape": list(sampler.latent_shape),
        "num_classes": sampler.num_classes,
        "guidance_scale": cfg.ldm.guidance_scale,
        "ldm": {"num_steps": cfg.ldm.num_steps, "beta_start": cfg.ldm.beta_start,
                "beta_end": cfg.ldm.beta_end, "kind": cfg.ldm.schedule} if cfg.ldm.enabled else None,
        "ddgan": {"num_steps": sampler.ddgan_schedule.num_steps, "beta_min": cfg.ddgan.beta_min,
                  "beta_max": cfg.ddgan.beta_max, "nz": sampler.nz} if cfg.ddgan.enabled else None,
    }
    (out / "export.json").write_text(json.dumps(meta, indent=1))
    if cfg.space == "latent":
        vae, vae_meta = load_weights(vae_export_path(cfg))
        save_weights(vae, out / "vae", metadata=vae_meta)
    return out


def build_model_like(module: nn.Module) -> nn.Module:
    """A fresh CPU copy of a model's architecture from its recorded config."""
    from distdiff.models import model_from_config

    return model_from_config(module.model_config)
