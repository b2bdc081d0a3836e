"""The training loop, written once against a `TrainContext`.

It runs the same way in one local process and on N Ray workers: the context supplies rank,
device, checkpoint storage and collectives; engines supply the optimisation; the task's step
function supplies the losses.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from distdiff.config import StageConfig
from distdiff.console import progress_bar
from distdiff.images import save_grid
from distdiff.tasks import NonFiniteLossError
from distdiff.train import preemption
from distdiff.train.checkpoint import TrainState, read_checkpoint, seed_fresh_streams, write_checkpoint
from distdiff.train.context import TrainContext
from distdiff.train.engines import EngineSet
from distdiff.train.fast import FastPath
from distdiff.train.metrics import MetricsLogger

StepFn = Callable[[dict, Any, int, torch.Generator], dict]


@dataclass
class StagePlan:
    """Everything one training stage needs, built by `distdiff.train.stages`."""

    name: str  # "vae" or "ldm"
    engines: EngineSet  # of TorchEngine or DeepSpeedEngine (the `Engine` protocol)
    emas: dict  # engine name -> EMA
    step_fn: StepFn
    stream: Any  # batches + state_dict / load_rank_states
    stage: StageConfig
    seed: int
    stage_dir: Path
    precision: str = "fp32"
    config_yaml: str | None = None
    sample_fn: Callable[[], dict[str, torch.Tensor]] | None = None  # grid name -> images in [-1, 1]
    final_metrics: dict = field(default_factory=dict)
    # Micro-steps per optimizer step (DeepSpeed gradient accumulation): checkpoints fall on multiples,
    # where no partly accumulated gradient would be lost.
    accumulation: int = 1
    export_names: dict = field(default_factory=dict)  # engine name -> weight stem in the export
    fast: FastPath = field(default_factory=FastPath)  # the resolved fast-path switches (all off: eager)


def _autocast(precision: str, device: torch.device):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _resume(ctx: TrainContext, plan: StagePlan, generator: torch.Generator) -> TrainState:
    latest = ctx.latest_checkpoint()
    if latest is None:
        return TrainState()
    state = read_checkpoint(latest, plan.engines, plan.emas, generator, ctx.rank)
    if not state.rng_restored:
        seed_fresh_streams(generator, plan.seed, ctx.rank, state.step)
    plan.stream.load_rank_states(state.data_states)
    if ctx.rank == 0:
        print(f"[{plan.name}] resumed from {latest} at step {state.step}", flush=True)
    return state


def _save(ctx: TrainContext, plan: StagePlan, state: TrainState, generator: torch.Generator) -> None:
    state.data_states = ctx.all_gather_object(plan.stream.state_dict())
    staging = ctx.begin_checkpoint(state.step)
    write_checkpoint(staging, plan.engines, plan.emas, state, generator, ctx.rank, plan.config_yaml)
    ctx.barrier()
    ctx.commit_checkpoint(staging, state.step, state.metrics)


def _write_samples(ctx: TrainContext, plan: StagePlan, step: int) -> None:
    if plan.sample_fn is None:
        return
    # Under ZeRO-3 a forward of a live network is a collective: every rank samples, rank 0 saves.
    collective = any(engine.collective_forward for _, engine in plan.engines.items())
    if ctx.rank != 0 and not collective:
        return
    grids = plan.sample_fn()
    if ctx.rank != 0:
        return
    for name, images in grids.items():
        save_grid(images, plan.stage_dir / "samples" / f"{name}-step{step:08d}.png")
        save_grid(images, plan.stage_dir / "samples" / f"{name}-latest.png")


def memory_metrics(device: torch.device) -> dict[str, float]:
    """Peak resident memory of this process and, on CUDA, peak allocated device memory (MiB)."""
    import resource

    metrics = {"mem/rss_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        metrics["mem/cuda_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return metrics


class _Throughput:
    """Images/s, the fraction of step time spent waiting for data, and the CPU share this process
    got (process CPU seconds per wall second: below the thread count when the machine is contended),
    over a logging window."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.images, self.busy, self.waiting, self.start = 0, 0.0, 0.0, time.perf_counter()
        self.cpu_start = time.process_time()

    def add(self, images: int, wait: float, step_time: float):
        self.images += images
        self.waiting += wait
        self.busy += step_time

    def summary(self) -> dict:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        return {"images_per_sec": self.images / elapsed, "data_wait_frac": self.waiting / max(self.busy, 1e-9),
                "cpu_util": (time.process_time() - self.cpu_start) / elapsed}


class _DataTally:
    """What this attempt of the stage drew from its stream, summed over ranks at the end: samples,
    and for shard streams the sum and sum of squares of the dataset indices (one epoch read whole on
    any number of ranks gives N, N(N-1)/2 and (N-1)N(2N-1)/6: a lost or repeated sample shows), the
    stream's own counters (I/O retries, skipped bad samples), and how many ranks started from
    distinct random streams."""

    KEYS = ("samples", "index_sum", "index_square_sum")
    STREAM_KEYS = ("retries", "bad_samples")

    def __init__(self, generator: torch.Generator):
        self.counts = dict.fromkeys(self.KEYS, 0)
        # Where this rank's random streams start (after a resume): ranks that share a start would
        # draw the same noise, so the summary counts the distinct ones.
        self.streams = hashlib.sha1(generator.get_state().numpy().tobytes()
                                    + torch.get_rng_state().numpy().tobytes()).hexdigest()

    def add(self, batch: dict) -> None:
        index = batch.get("index")
        if index is None:
            self.counts["samples"] += len(next(v for v in batch.values() if torch.is_tensor(v)))
            return
        index = index.to(torch.int64)
        self.counts["samples"] += len(index)
        self.counts["index_sum"] += int(index.sum())
        self.counts["index_square_sum"] += int((index * index).sum())

    def summary(self, ctx: TrainContext, stream) -> dict:
        """`data/<key>` summed over ranks (a collective: every rank calls it)."""
        counters = stream.metrics() if hasattr(stream, "metrics") else {}
        mine = {**self.counts, **{k: counters.get(k, 0) for k in self.STREAM_KEYS}, "streams": self.streams}
        ranks = ctx.all_gather_object(mine)
        summary = {f"data/{key}": sum(r[key] for r in ranks) for key in (*self.KEYS, *self.STREAM_KEYS)}
        return {**summary, "rng/distinct_rank_streams": len({r["streams"] for r in ranks})}


def run_stage(ctx: TrainContext, plan: StagePlan) -> dict:
    """Train `plan` to `plan.stage.steps`, resuming from the context's latest checkpoint.

    Returns:
        the final metrics (last logged values plus throughput), identical on every rank.
    """
    started = time.perf_counter()
    plan.fast.apply_globals()
    if ctx.rank == 0:
        print(f"[{plan.name}] {plan.fast.describe()}", flush=True)
    torch.manual_seed(plan.seed * 1000 + ctx.rank)
    generator = torch.Generator(device=ctx.device).manual_seed(plan.seed * 1_000_003 + ctx.rank)
    state = _resume(ctx, plan, generator)
    logger = MetricsLogger(plan.stage_dir) if ctx.rank == 0 else None
    global_batch = plan.stage.batch_size * ctx.world_size
    meter, overall = _Throughput(), _Throughput()
    batches = iter(plan.stream)
    bar = progress_bar(total=plan.stage.steps, initial=state.step, desc=plan.name, disable=ctx.rank != 0)
    metrics: dict = dict(state.metrics)
    preempted = False
    tally = _DataTally(generator)
    while state.step < plan.stage.steps:
        t0 = time.perf_counter()
        batch = next(batches)
        tally.add(batch)
        batch = plan.fast.batch_to(batch, ctx.device)
        t1 = time.perf_counter()
        try:
            with _autocast(plan.precision, ctx.device):
                metrics = plan.step_fn(batch, plan.engines, state.step, generator)
        except NonFiniteLossError as err:
            latest = ctx.latest_checkpoint()
            raise NonFiniteLossError(
                f"[{plan.name}] step {state.step}: {err}; training stopped, nothing was saved; "
                f"the latest good checkpoint stays {latest or '(none yet)'}"
            ) from None
        for name, ema in plan.emas.items():
            ema.update(plan.engines[name])
        state.step += 1
        state.samples_seen += global_batch
        dt = time.perf_counter() - t0
        meter.add(global_batch, t1 - t0, dt)
        overall.add(global_batch, t1 - t0, dt)
        bar.update(1)
        _after_step(ctx, plan, state, metrics, meter, logger, bar, generator)
        if _handle_preemption(ctx, plan, state, generator):
            preempted = True
            break
    bar.close()
    final = {**{k: v for k, v in metrics.items() if isinstance(v, (int, float))}, **overall.summary()}
    final.update({"steps": state.step, "samples_seen": state.samples_seen, "preempted": preempted})
    final.update(tally.summary(ctx, plan.stream))
    if logger:
        logger.close()
    if ctx.rank == 0:
        print(stage_report(plan.name, final, time.perf_counter() - started), flush=True)
    return final


def stage_report(name: str, final: dict, seconds: float) -> str:
    """A few lines that end a stage on the console: steps, time, throughput, the last losses."""
    losses = "  ".join(f"{key} {value:.4f}" for key, value in final.items() if key.endswith("loss"))
    state = "stopped early" if final.get("preempted") else "done"
    return (f"[{name}] {state}: step {final['steps']}, {seconds / 60:.1f} min this run, "
            f"{final.get('images_per_sec', 0.0):.1f} images/s\n[{name}] last losses: {losses or '-'}")


def _checkpoint_due(step: int, stage: StageConfig) -> bool:
    return step % stage.checkpoint_every == 0 or step == stage.steps


def _handle_preemption(ctx: TrainContext, plan: StagePlan, state: TrainState, generator) -> bool:
    """Checkpoint on a preemption notice (SIGUSR1 / SIGTERM); True when the stage must stop now."""
    request = ctx.poll_preemption()
    if request is None:
        return False
    if state.step % plan.accumulation:
        preemption.request(request)  # every rank saw the same request: all defer to the same boundary
        return False
    if not _checkpoint_due(state.step, plan.stage):  # else _after_step has just saved this step
        _save(ctx, plan, state, generator)
    if ctx.rank == 0:
        print(f"[{plan.name}] preemption notice ({request}): checkpoint of step {state.step} saved", flush=True)
    return request == preemption.STOP


def _after_step(ctx, plan, state, metrics, meter, logger, bar, generator) -> None:
    step, stage = state.step, plan.stage
    last = step == stage.steps
    if step % stage.log_every == 0 or last:
        record = {**metrics, **meter.summary(), "samples_seen": state.samples_seen, **memory_metrics(ctx.device)}
        meter.reset()
        state.metrics = {k: v for k, v in record.items() if isinstance(v, (int, float))}
        ctx.report(state.metrics)
        if logger:
            logger.log(step, record)
        losses = {k.split("/")[0] + "/" + k.split("/")[1][:6]: f"{v:.4f}" for k, v in metrics.items()
                  if "loss" in k}
        bar.set_postfix({**losses, "img/s": f"{record['images_per_sec']:.0f}"}, refresh=False)
    if _checkpoint_due(step, stage):
        _save(ctx, plan, state, generator)
    if (stage.sample_every and step % stage.sample_every == 0) or last:
        _write_samples(ctx, plan, step)
