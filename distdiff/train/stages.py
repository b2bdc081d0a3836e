"""Building the two training stages from a RunConfig, and exporting their results.

Stage 1 trains the KL-VAE on images and exports it with its latent scale factor. Stage 2
trains its members (the LDM U-Net, the DDGAN, the one-step GAN) jointly on the VAE's latents.
Engines come from a factory, so the same builders serve the local trainer (plain PyTorch) and the
Ray workers (DeepSpeed).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from distdiff.config import OptimConfig, RunConfig, dump_yaml
from distdiff.models import build_model, load_weights, save_weights
from distdiff.tasks import MEMBERS, LatentSource, Stage2Sampler, VAETask, build_stage2, sampler_key
from distdiff.train.data_source import build_source_stream, describe_source
from distdiff.train.ema import EMA
from distdiff.train.engines import EngineSet
from distdiff.train.fast import FastPath
from distdiff.train.loop import StagePlan

EngineFactory = Callable[[str, nn.Module, OptimConfig, str], object]
SAMPLE_SEED_BASE = 10_000_000  # grid seeds, disjoint from anything training draws
EXPORT_FILE = "export.json"


def run_dir(cfg: RunConfig) -> Path:
    return Path(cfg.output_dir) / cfg.name


def vae_export_path(cfg: RunConfig) -> Path:
    """Where stage 2 finds the VAE: `vae.checkpoint`, else this run's own stage-1 export."""
    return Path(cfg.vae.checkpoint) if cfg.vae.checkpoint else run_dir(cfg) / "vae" / "export" / "vae"


def given_vae_stage(cfg: RunConfig) -> dict | None:
    """Stage 1's record for a pipeline whose stage 2 uses the VAE export `vae.checkpoint`: no VAE is
    trained then, as stage 2 would not use it. None when stage 1 must train this run's own VAE."""
    if not cfg.vae.checkpoint:
        return None
    print(f"[vae] not trained: stage 2 uses the export vae.checkpoint={cfg.vae.checkpoint}", flush=True)
    return {"trained": False, "export": cfg.vae.checkpoint, "preempted": False}


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
    fast = FastPath.resolve(cfg.perf, ctx.device)
    vae = fast.layout(build_vae(cfg).to(ctx.device))
    engines = EngineSet({"vae": make_engine("vae", vae, cfg.vae.optim, "adamw")})
    fast.compile_engines(engines)
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
        stream=fast.wrap_stream(build_source_stream(cfg.data, cfg.stage1.batch_size, ctx.rank, ctx.world_size,
                                                    cfg.seed), ctx.device),
        stage=cfg.stage1, seed=cfg.seed, stage_dir=run_dir(cfg) / "vae", precision=cfg.precision,
        config_yaml=dump_yaml(cfg), sample_fn=reconstructions,
        accumulation=cfg.distributed.gradient_accumulation_steps, fast=fast,
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


def _diffusion_shape(image_shape: tuple[int, int, int], vae: nn.Module | None) -> tuple[int, int, int]:
    c, h, w = image_shape
    if vae is None:
        return c, h, w
    f = vae.downsample_factor
    return vae.model_config["kwargs"]["latent_channels"], h // f, w // f


def stage2_engines(setup, make_engine: EngineFactory, fast: FastPath,
                   device: torch.device) -> tuple[EngineSet, dict]:
    """The engines of every stage-2 network in the fast path's layout, their EMAs (copied before the
    networks compile, so they sample eagerly), then the compiled forwards."""
    engines = EngineSet({name: make_engine(name, fast.layout(net.module.to(device)), net.optim, net.optimizer)
                         for name, net in setup.networks.items()})
    emas = {name: EMA(engines[name], net.ema_decay)
            for name, net in setup.networks.items() if net.ema_decay is not None}
    fast.compile_engines(engines, setup.eager_networks)
    return engines, emas


def build_ldm_plan(cfg: RunConfig, ctx, make_engine: EngineFactory) -> tuple[StagePlan, Stage2Sampler]:
    """Stage 2: every enabled member (LDM, DDGAN, GAN) on one latent stream; the plan and an EMA sampler."""
    fast = FastPath.resolve(cfg.perf, ctx.device)
    vae = load_stage2_vae(cfg, ctx.device)
    if vae is not None:
        vae = fast.layout(vae)
    info = describe_source(cfg.data)  # once per stage (for shards a read of the manifest)
    latents = LatentSource(vae)
    # Each member's initial weights depend on the seed and its name only, not on which others train.
    setup = build_stage2(cfg, latents, info.image_shape, _diffusion_shape(info.image_shape, vae),
                         info.num_classes if cfg.ldm.class_conditional else None,
                         on_member=lambda name: torch.manual_seed(cfg.seed + 1 + MEMBERS.index(name)),
                         captions=info.captions)
    engines, emas = stage2_engines(setup, make_engine, fast, ctx.device)
    sampler = Stage2Sampler(setup.spec, latents,
                            {name: emas[m.sampling_network].model for name, m in setup.members.items()})
    plan = StagePlan(
        name="ldm", engines=engines, emas=emas, step_fn=setup.task.step,
        stream=fast.wrap_stream(build_source_stream(cfg.data, cfg.stage2.batch_size, ctx.rank, ctx.world_size,
                                                    cfg.seed), ctx.device),
        stage=cfg.stage2, seed=cfg.seed, stage_dir=run_dir(cfg) / "ldm", precision=cfg.precision,
        config_yaml=dump_yaml(cfg), sample_fn=lambda: grid_samples(sampler, cfg.stage2.num_samples),
        accumulation=cfg.distributed.gradient_accumulation_steps, fast=fast,
        export_names={name: net.export_name for name, net in setup.networks.items()},
    )
    return plan, sampler


def grid_seeds(n: int) -> list[int]:
    """The fixed seeds of sample grids and sampler timings."""
    return list(range(SAMPLE_SEED_BASE, SAMPLE_SEED_BASE + n))


def grid_samples(sampler: Stage2Sampler, n: int) -> dict[str, torch.Tensor]:
    """Periodic sample grids of the EMA models with fixed seeds, one per default sampler.

    The 1000-step ancestral DDPM grid is left to the end of the run (`time_samplers`): it costs as
    much as a few hundred training steps on a CPU.
    """
    seeds, labels = grid_seeds(n), sampler.class_labels(range(n))
    return {sampler_key(model, settings): sampler.sample(model, settings, seeds, labels)
            for model, settings in sampler.default_samplers(skip=("ddpm",))}


def export_stage2(cfg: RunConfig, plan: StagePlan, sampler: Stage2Sampler) -> Path:
    """Write raw and EMA weights, the VAE (latent space), then `export.json` (the Stage2Spec) last."""
    out = run_dir(cfg) / "ldm" / "export"
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for name, stem in plan.export_names.items():
        model = build_model_like(plan.engines[name].module)
        model.load_state_dict(plan.engines[name].full_state_dict())
        save_weights(model, out / stem)
        files.append(stem)
        if name in plan.emas:
            save_weights(plan.emas[name].model, out / f"{stem}_ema")
            files.append(f"{stem}_ema")
    if cfg.space == "latent":
        vae, vae_meta = load_weights(vae_export_path(cfg))
        save_weights(vae, out / "vae", metadata=vae_meta)
    replace(sampler.spec, files=tuple(files)).write(out / EXPORT_FILE)  # last: marks the export complete
    return out


def build_model_like(module: nn.Module) -> nn.Module:
    """A fresh CPU copy of a model's architecture from its recorded config."""
    from distdiff.models import model_from_config

    return model_from_config(module.model_config)
