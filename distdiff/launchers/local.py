"""One process on CPU or one GPU: the debug path and the embedded demo.

Runs the same stage plans and loop as the Ray workers, with plain PyTorch engines and a
`LocalContext` writing checkpoints under the run directory.
"""

from __future__ import annotations

from pathlib import Path

from distdiff.config import RunConfig, dump_yaml
from distdiff.launchers.evaluation import evaluate_run, local_paths, summary_table
from distdiff.train import preemption
from distdiff.train.backends import training_backend
from distdiff.train.checkpoint import list_complete
from distdiff.train.context import LocalContext, resolve_device
from distdiff.train.loop import run_stage
from distdiff.train.stages import (build_ldm_plan, build_vae_plan, export_stage2, export_vae, given_vae_stage,
                                   run_dir)
from distdiff.train.summary import time_samplers, write_summary


def engine_factory(cfg: RunConfig, ctx: LocalContext, batch_size: int):
    """The engines of `distributed.backend` in this process, after checking that the checkpoint a
    resume would load was written by that backend."""
    backend = training_backend(cfg, "local", world_size=1)
    complete = list_complete(ctx.checkpoint_root)
    if complete:
        backend.resume_conversions(complete[-1], 1, cfg)
    return backend.engine_factory(cfg, batch_size, frozenset())


def prepare_run_dir(cfg: RunConfig) -> Path:
    """Create the run directory, print the resolved config and save it as config.yaml."""
    directory = run_dir(cfg)
    directory.mkdir(parents=True, exist_ok=True)
    text = dump_yaml(cfg)
    print(f"resolved config (saved to {directory / 'config.yaml'}):\n{text}", flush=True)
    (directory / "config.yaml").write_text(text)
    return directory


def _train_stage(ctx: LocalContext, plan) -> dict:
    """Run a stage with preemption notices handled; final metrics, `preempted` set if SIGTERM stopped it."""
    with preemption.handled_notices():
        final = run_stage(ctx, plan)
    if final["preempted"]:
        print(preemption.stopped_early_message(plan.name, final["steps"]), flush=True)
    return final


def _local_stage(cfg: RunConfig, name: str, stage, build) -> tuple:
    """Build stage `name`'s plan in this process with `build(cfg, ctx, engine_factory)` and train it.

    Returns:
        (plan, whatever else `build` returned or None, final metrics, device).
    """
    device = resolve_device(cfg.device)
    ctx = LocalContext(run_dir(cfg) / name, device, stage.keep_checkpoints)
    built = build(cfg, ctx, engine_factory(cfg, ctx, stage.batch_size))
    plan, extra = built if isinstance(built, tuple) else (built, None)
    final = _train_stage(ctx, plan)
    if not final["preempted"]:
        print(f"[{name}] checkpoints in {ctx.checkpoint_root}", flush=True)
    return plan, extra, final, device


def train_vae(cfg: RunConfig) -> dict:
    """Stage 1 in this process; exports the VAE with its latent scale factor."""
    plan, _, final, device = _local_stage(cfg, "vae", cfg.stage1, build_vae_plan)
    if final["preempted"]:
        return final  # a half-trained stage is never exported
    final["export"] = str(export_vae(cfg, plan, device))
    print(f"[vae] export {final['export']}", flush=True)
    return final


def train_ldm(cfg: RunConfig, sampler_timing_images: int = 16) -> dict:
    """Stage 2 in this process; exports the networks and times the samplers."""
    plan, sampler, final, _ = _local_stage(cfg, "ldm", cfg.stage2, build_ldm_plan)
    if final["preempted"]:
        return final  # a half-trained stage is never exported
    final["export"] = str(export_stage2(cfg, plan, sampler))
    print(f"[ldm] export {final['export']}", flush=True)
    final["sampling"] = time_samplers(sampler, sampler_timing_images, plan.stage_dir / "samples")
    return final


def train_seg(cfg: RunConfig) -> dict:
    """The segmentation U-Net in this process; exports its EMA network and scores it on the held-out images."""
    from distdiff.launchers.seg import score_seg_export
    from distdiff.train.seg_stage import build_seg_plan, export_seg

    plan, _, final, device = _local_stage(cfg, "seg", cfg.stage_seg, build_seg_plan)
    if final["preempted"]:
        return final  # a half-trained stage is never exported
    stem = export_seg(plan)
    final.update(score_seg_export(cfg, stem, device, plan.stage_dir), export=str(stem))
    return final


def run_pipeline(cfg: RunConfig) -> dict:
    """VAE (unless `vae.checkpoint` names one), then the stage-2 members, then (if configured) the
    evaluation, then summary.json."""
    directory = prepare_run_dir(cfg)
    vae = given_vae_stage(cfg) or train_vae(cfg)
    if vae["preempted"]:
        return {"stages": {"vae": vae}, "preempted": True}
    ldm = train_ldm(cfg)
    if ldm["preempted"]:
        return {"stages": {"vae": vae, "ldm": ldm}, "preempted": True}
    sampling = ldm.pop("sampling")
    results = None
    if cfg.evaluation.enabled:
        export, out = local_paths(cfg, directory)
        results = evaluate_run(cfg, export, out, on_ray=False, device=resolve_device(cfg.device).type)
    summary = write_summary(directory / "summary.json", {"vae": vae, "ldm": ldm}, sampling,
                            summary_table(results) if results else None)
    print(f"summary written to {directory / 'summary.json'}", flush=True)
    summary["evaluation_results"] = results
    return summary
