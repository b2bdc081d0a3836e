"""Training on a Ray cluster: a Ray Train `TorchTrainer` whose workers run DeepSpeed engines.

The driver (this module, run by `launch/train_*.py` or under `ray job submit`) checks the storage,
connects to the cluster named by `RAY_ADDRESS` (or starts a local one), converts the latest
checkpoint to DeepSpeed's universal format when the number of workers changed, and starts the
trainer. Each worker builds the stage plan with DeepSpeed engines and runs the shared loop.

Storage layout (a local folder or s3://bucket/prefix; default: `output_dir`):
    <storage>/<name>/config.yaml
    <storage>/<name>/<stage>/checkpoints/step-XXXXXXXX/   (COMPLETE marker written last)
    <storage>/<name>/<stage>/{metrics.jsonl, tensorboard/, samples/, export/}
"""

from __future__ import annotations

import copy
import json
import os
import signal
import threading
import uuid
from pathlib import Path

from distdiff.config import RunConfig, dump_yaml, from_dict, to_dict
from distdiff.train import preemption
from distdiff.train.failures import HOPELESS_ERRORS, HOPELESS_RECORD, failure_from_record, hopeless_record
from distdiff.train.stages import given_vae_stage, run_dir, vae_export_path
from distdiff.train.storage import Storage, StorageError

STAGE_OUTPUTS = ("metrics.jsonl", "events.jsonl", "tensorboard", "samples", "export")  # mirrored to remote storage
FINAL_METRICS = "final.json"  # rank 0's final metrics of a stage, read back by the driver
# Ray Train's record of the checkpoints it was shown. It still names folders distdiff has pruned since,
# and Ray refuses to start a run whose record names a missing folder; distdiff resumes from its own
# COMPLETE markers, so a resubmission drops the record.
RAY_CHECKPOINT_RECORD = "checkpoint_manager_snapshot.json"


# -- the driver ----------------------------------------------------------------------------------


def _absolute(cfg: RunConfig) -> RunConfig:
    """A copy with `output_dir` (and a local storage path) absolute, as workers see the same paths."""
    cfg = copy.deepcopy(cfg)
    cfg.output_dir = str(Path(cfg.output_dir).expanduser().resolve())
    if cfg.distributed.storage_path and "://" not in cfg.distributed.storage_path:
        cfg.distributed.storage_path = str(Path(cfg.distributed.storage_path).expanduser().resolve())
    if cfg.vae.checkpoint and "://" not in cfg.vae.checkpoint:
        cfg.vae.checkpoint = str(Path(cfg.vae.checkpoint).expanduser().resolve())
    return cfg


def open_storage(cfg: RunConfig, fail_fast: bool = False) -> Storage:
    """The run's storage root: `distributed.storage_path`, or `output_dir` when unset."""
    return Storage.open(cfg.distributed.storage_path or cfg.output_dir, fail_fast=fail_fast)


def preflight(cfg: RunConfig) -> Storage:
    """Fail in seconds, before any worker starts, on unusable storage or data.

    Raises:
        StorageError: the bucket does not exist, the endpoint is unreachable or the keys are wrong.
        DataError: the data source cannot be read or does not fit this many ranks.
    """
    from distdiff.data import preflight as data_preflight

    storage = open_storage(cfg, fail_fast=True)
    storage.check_writable()
    # The shard manifest and sizes: the data's bucket, endpoint and keys are checked too.
    data_preflight(cfg.data.source, cfg.distributed.num_workers, cfg.data.num_workers)
    return open_storage(cfg)


def prepare_run_dir(cfg: RunConfig) -> Path:
    """Check storage and data, create the run directory, print and save the resolved config."""
    cfg = _absolute(cfg)
    storage = preflight(cfg)
    directory = run_dir(cfg)
    directory.mkdir(parents=True, exist_ok=True)
    text = dump_yaml(cfg)
    print(f"resolved config (saved to {directory / 'config.yaml'}):\n{text}", flush=True)
    (directory / "config.yaml").write_text(text)
    storage.child(cfg.name).write_text(text, "config.yaml")
    return directory


def _prepare_resume(checkpoints: Storage, cfg: RunConfig, backend) -> None:
    """Let the training backend make the newest intact checkpoint loadable at this run's layout."""
    from distdiff.train.checkpoint import newest_intact
    from distdiff.train.context import warn

    # The workers will pass over a damaged checkpoint (checking sizes and hashes); skip the same here.
    name = newest_intact(reversed(checkpoints.complete_names()), checkpoints.checkpoint_damage, checkpoints.uri, warn)
    if name is not None:
        backend.prepare_resume(checkpoints, name, cfg.distributed.num_workers, cfg)


class _SignalForwarder:
    """Driver-side SIGTERM / SIGUSR1: ask the workers (through the cluster's KV store) to checkpoint.

    SIGUSR1: checkpoint and continue. SIGTERM: checkpoint and stop; a second SIGTERM exits at once.
    """

    def __init__(self, run_id: str):
        self.run_id = run_id
        self.count = 0
        self.previous: dict = {}
        self.stopping = False

    def _handle(self, signum, frame) -> None:
        from ray.experimental.internal_kv import _internal_kv_put

        from distdiff.train.ray_context import driver_request_key

        if signum == signal.SIGTERM and self.stopping:
            raise SystemExit(143)
        self.stopping = self.stopping or signum == signal.SIGTERM
        self.count += 1
        kind = "stop" if self.stopping else "save"
        _internal_kv_put(driver_request_key(self.run_id), f"{kind}:{self.count}".encode(), overwrite=True)
        print(f"signal {signal.Signals(signum).name}: asking the workers to checkpoint"
              f"{' and stop' if kind == 'stop' else ''}", flush=True)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGUSR1)}
        return self

    def __exit__(self, *exc):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


def _fit(cfg: RunConfig, stage: str, time_samplers: bool = False) -> dict:
    """Run one stage ("vae", "ldm" or "seg") on the cluster; returns the final metrics of rank 0."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig as RayRunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from distdiff.launchers.ray_cluster import connect, worker_env
    from distdiff.train.backends import training_backend

    cfg = _absolute(cfg)
    backend = training_backend(cfg, "ray")
    storage = preflight(cfg)
    needed = cfg.distributed.num_workers * cfg.distributed.cpus_per_worker
    connect(num_cpus_local=max(os.cpu_count() or 1, needed), dashboard=True)
    checkpoints = storage.child(cfg.name, stage, "checkpoints")
    _prepare_resume(checkpoints, cfg, backend)
    outputs = storage.child(cfg.name, stage)
    # Records of an earlier submission of this run: its final metrics, failure and Ray's checkpoint list.
    outputs.remove_file(FINAL_METRICS)
    outputs.remove_file(HOPELESS_RECORD)
    checkpoints.remove_file(RAY_CHECKPOINT_RECORD)
    dist = cfg.distributed
    run_id = f"{cfg.name}/{stage}/{uuid.uuid4().hex[:8]}"
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={"cfg": to_dict(cfg), "stage": stage, "storage": storage, "run_id": run_id,
                           "time_samplers": time_samplers},
        torch_config=TorchConfig(backend="nccl" if dist.use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=dist.num_workers, use_gpu=dist.use_gpu,
                                     resources_per_worker={"CPU": dist.cpus_per_worker}),
        run_config=RayRunConfig(
            name="checkpoints", storage_path=checkpoints.root.rsplit("/", 1)[0], storage_filesystem=storage.fs,
            failure_config=FailureConfig(max_failures=dist.max_failures),
            # Pruning is ours (after the COMPLETE marker), so Ray never deletes a folder itself.
            checkpoint_config=CheckpointConfig(num_to_keep=None),
            worker_runtime_env={"env_vars": worker_env()},
        ),
    )
    with _SignalForwarder(run_id):
        try:
            trainer.fit()
        except Exception:
            _raise_if_hopeless(outputs, run_id)  # with max_failures 0 Ray raises the worker's error itself
            raise
    _raise_if_hopeless(outputs, run_id)
    # Rank 0 leaves the final metrics in storage (Ray's Result carries the latest checkpoint's metrics).
    final = json.loads(outputs.read_text(FINAL_METRICS))
    if final.get("preempted"):
        print(preemption.stopped_early_message(stage, final.get("steps")), flush=True)
    else:
        print(f"[{stage}] checkpoints in {checkpoints.uri}, export {final.get('export')}", flush=True)
    return final


def train_vae(cfg: RunConfig) -> dict:
    """Stage 1 on the cluster; exports the VAE with its latent scale factor."""
    return _fit(cfg, "vae")


def train_ldm(cfg: RunConfig) -> dict:
    """Stage 2 (LDM + DDGAN) on the cluster; exports raw and EMA weights."""
    return _fit(cfg, "ldm")


def train_seg(cfg: RunConfig) -> dict:
    """The segmentation U-Net on the cluster; rank 0 exports its EMA network and scores it on held-out canvases."""
    return _fit(cfg, "seg")


def run_pipeline(cfg: RunConfig) -> dict:
    """VAE (unless `vae.checkpoint` names one), then the stage-2 members, then (if configured) the
    distributed evaluation, then summary.json."""
    from distdiff.launchers.evaluation import evaluate_run, summary_table
    from distdiff.train.summary import write_summary

    directory = prepare_run_dir(cfg)
    vae = given_vae_stage(cfg) or train_vae(cfg)
    if vae.get("preempted"):
        return {"stages": {"vae": vae}, "preempted": True}
    ldm = _fit(cfg, "ldm", time_samplers=True)  # times the samplers for summary.json
    if ldm.get("preempted"):
        return {"stages": {"vae": vae, "ldm": ldm}, "preempted": True}
    sampling = ldm.pop("sampling", {})
    remote = open_storage(_absolute(cfg)).child(cfg.name)
    results = None
    if cfg.evaluation.enabled:
        # The distributed evaluator on the same cluster, reading the export where the workers wrote it.
        results = evaluate_run(cfg, remote.child("ldm", "export").uri, remote.child("eval").uri, on_ray=True,
                               device="cuda" if cfg.distributed.use_gpu else "cpu")
    summary = write_summary(directory / "summary.json", {"vae": vae, "ldm": ldm}, sampling,
                            summary_table(results) if results else None)
    if remote.is_s3 or Path(remote.root) != directory:
        remote.upload(directory / "summary.json", "summary.json")
    print(f"summary written to {directory / 'summary.json'}", flush=True)
    summary["evaluation_results"] = results
    return summary


# -- the workers ---------------------------------------------------------------------------------


def _stage_outputs(cfg: RunConfig, stage: str, storage: Storage) -> dict:
    """Local output folders of rank 0 to mirror into storage (none when storage is the output dir)."""
    local = run_dir(cfg) / stage
    remote = storage.child(cfg.name, stage)
    if not storage.is_s3 and Path(remote.root) == local:
        return {}
    return {local / item: remote.child(item) for item in STAGE_OUTPUTS}


def _fetch_vae(cfg: RunConfig, storage: Storage, ctx) -> None:
    """Make stage 1's exported VAE present on this node (from storage when trained elsewhere)."""
    import ray.train

    target = vae_export_path(cfg)
    if cfg.space != "latent" or cfg.vae.checkpoint or Path(f"{target}.safetensors").exists():
        return
    if ray.train.get_context().get_local_rank() == 0:
        storage.child(cfg.name, "vae").download("export", target.parent)
    ctx.barrier()


def _stage_config(cfg: RunConfig, stage: str):
    """The loop settings of stage "vae", "ldm" or "seg"."""
    return {"vae": cfg.stage1, "ldm": cfg.stage2, "seg": cfg.stage_seg}[stage]


def _build_plan(cfg: RunConfig, stage: str, ctx, backend, convert: frozenset):
    import torch

    from distdiff.train.stages import build_ldm_plan, build_vae_plan

    factory = backend.engine_factory(cfg, _stage_config(cfg, stage).batch_size, convert)
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank (ZeRO-3 shards them as they are)
    if stage == "vae":
        return build_vae_plan(cfg, ctx, factory), None
    if stage == "seg":
        from distdiff.train.seg_stage import build_seg_plan

        return build_seg_plan(cfg, ctx, factory), None
    return build_ldm_plan(cfg, ctx, factory)


def _export(cfg: RunConfig, stage: str, plan, sampler, ctx, time_samplers: bool) -> dict:
    """Consolidate weights on every rank; rank 0 writes the exports (and times the samplers)."""
    from distdiff.train.stages import export_stage2, export_vae

    for _, engine in plan.engines.items():
        engine.consolidate()  # collective under ZeRO-3 / bf16
    out: dict = {}
    if ctx.rank == 0:
        if stage == "vae":
            out["export"] = str(export_vae(cfg, plan, ctx.device))
        elif stage == "seg":
            from distdiff.launchers.seg import score_seg_export
            from distdiff.train.seg_stage import export_seg

            stem = export_seg(plan)
            out.update(score_seg_export(cfg, stem, ctx.device, plan.stage_dir), export=str(stem))
        else:
            out["export"] = str(export_stage2(cfg, plan, sampler))
            if time_samplers:
                from distdiff.train.summary import time_samplers as timing

                out["sampling"] = timing(sampler, 16, plan.stage_dir / "samples")
    ctx.barrier()
    return out


def _train_worker(config: dict) -> None:
    """The Ray Train worker function; a failure no retry can fix is recorded for the driver."""
    import ray.train

    cfg = from_dict(RunConfig, config["cfg"])
    stage, storage = config["stage"], config["storage"]
    outputs = storage.child(cfg.name, stage)
    if _hopeless_failure(outputs, config["run_id"]) is not None:
        return  # Ray's retry after a failure no retry can fix: end it at once (the driver reports it)
    try:
        _train_stage(cfg, stage, storage, config)
    except HOPELESS_ERRORS as err:
        outputs.write_text(json.dumps(hopeless_record(err, config["run_id"], ray.train.get_context().get_world_rank(),
                                                      stage)), HOPELESS_RECORD)
        raise


def _hopeless_failure(outputs: Storage, run_id: str) -> dict | None:
    """The record a worker of this fit left on a failure no retry can fix, or None."""
    if not outputs.exists(HOPELESS_RECORD):
        return None
    record = json.loads(outputs.read_text(HOPELESS_RECORD))
    return record if record.get("run_id") == run_id else None


def _raise_if_hopeless(outputs: Storage, run_id: str) -> None:
    record = _hopeless_failure(outputs, run_id)
    if record is not None:
        raise failure_from_record(record)


def _train_stage(cfg: RunConfig, stage: str, storage: Storage, config: dict) -> None:
    """One worker's part of a stage: resume, train, export, leave the final metrics in storage."""
    import ray.train
    import torch

    from distdiff.train.backends import training_backend
    from distdiff.train.loop import run_stage
    from distdiff.train.ray_context import RayContext

    torch.set_num_threads(cfg.distributed.cpus_per_worker)
    device = ray.train.torch.get_device() if cfg.distributed.use_gpu else torch.device("cpu")
    stage_cfg = _stage_config(cfg, stage)
    ctx = RayContext(storage.child(cfg.name, stage, "checkpoints"), device, stage_cfg.keep_checkpoints,
                     config["run_id"], _stage_outputs(cfg, stage, storage), events=run_dir(cfg) / stage / "events.jsonl",
                     drain_poll_every=stage_cfg.log_every)
    backend = training_backend(cfg, "ray", ctx.world_size)
    resume = ctx.resolve_resume()
    convert = frozenset() if resume is None else backend.resume_conversions(resume, ctx.world_size, cfg)
    if stage == "ldm":
        _fetch_vae(cfg, storage, ctx)
    plan, sampler = _build_plan(cfg, stage, ctx, backend, convert)
    try:
        with ctx.worker_signals():
            final = run_stage(ctx, plan)
        if not final["preempted"]:
            final.update(_export(cfg, stage, plan, sampler, ctx, config["time_samplers"]))
        if ctx.rank == 0:
            ctx.sync_outputs()
            storage.child(cfg.name, stage).write_text(json.dumps(final, indent=1), FINAL_METRICS)
    finally:
        plan.engines.destroy()
        ctx.close()


__all__ = ["StorageError", "open_storage", "preflight", "prepare_run_dir", "run_pipeline", "train_ldm", "train_seg",
           "train_vae"]
