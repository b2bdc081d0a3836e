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
from distdiff.train.stages import build_ldm_plan, build_vae_plan, export_stage2, export_vae, run_dir
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


def train_vae(cfg: RunConfig) -> dict:
    """Stage 1 in this process; exports the VAE with its latent scale factor."""
    device = resolve_device(cfg.device)
    ctx = LocalContext(run_dir(cfg) / "vae", device, cfg.stage1.keep_checkpoints)
    plan = build_vae_plan(cfg, ctx, engine_factory(cfg, ctx, cfg.stage1.batch_size))
    final = _train_stage(ctx, plan)
    if final["preempted"]:
        return final  # a half-trained stage is never exported
    final["export"] = str(export_vae(cfg, plan, device))
    print(f"[vae] checkpoints in {ctx.checkpoint_root}, export {final['export']}", flush=True)
    return final


def train_ldm(cfg: RunConfig, sampler_timing_images: int = 16) -> dict:
    """Stage 2 in this process; exports the networks and times the samplers."""
    device = resolve_device(cfg.device)
    ctx = LocalContext(run_dir(cfg) / "ldm", device, cfg.stage2.keep_checkpoints)
    plan, sampler = build_ldm_plan(cfg, ctx, engine_factory(cfg, ctx, cfg.stage2.batch_size))
    final = _train_stage(ctx, plan)
    if final["preempted"]:
        return final  # a half-trained stage is never exported
    final["export"] = str(export_stage2(cfg, plan, sampler))
    print(f"[ldm] checkpoints in {ctx.checkpoint_root}, export {final['export']}", flush=True)
    final["sampling"] = time_samplers(sampler, sampler_timing_images, plan.stage_dir / "samples")
    return final


def train_seg(cfg: RunConfig) -> dict:
    """The segmentation U-Net in this process; exports its EMA network and scores it on held-out canvases."""
    from distdiff.launchers.seg import score_seg_export
    from distdiff.train.seg_stage import build_seg_plan, export_seg

    device = resolve_device(cfg.device)
    ctx = LocalContext(run_dir(cfg) / "seg", device, cfg.stage_seg.keep_checkpoints)
    plan = build_seg_plan(cfg, ctx, engine_factory(cfg, ctx, cfg.stage_seg.batch_size))
    final = _train_stage(ctx, plan)
    if final["preempted"]:
        return final
    stem = export_seg(plan)
    final.update(score_seg_export(cfg, stem, device, plan.stage_dir), export=str(stem))
    return final


def run_pipeline(cfg: RunConfig) -> dict:
    """VAE, then the stage-2 members, then (if configured) the evaluation, then summary.json."""
    directory = prepare_run_dir(cfg)
    vae = train_vae(cfg)
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
