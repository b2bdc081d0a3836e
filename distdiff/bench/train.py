"""Training throughput of the distributed path against a plain PyTorch loop, measured side by side.

1. Overhead: steps/s of distdiff's full path (Ray Train + DeepSpeed + shard streaming) on one worker
   with one thread, against a plain PyTorch loop over the same networks (U-Net, DDGAN generator and
   discriminator, EMAs) and in-memory batches in this process with one thread. Target >= 0.9.
2. Scaling: images/s of 2 workers x 1 thread against 1 worker x 1 thread. Target >= 1.7. Beside
   it, the machine's own ceiling (two plain loops in separate processes against one) and the same
   comparison for the distributed step without Ray (DeepSpeed engines in gloo processes), which
   separates what the collectives cost from what Ray's own processes take from the workers.

Steady-state rates only: the first logging window (start-up, first-step allocation) is dropped.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from distdiff.config import DataConfig, RunConfig, load_config
from distdiff.train.metrics import read_metrics


def bench_config(out: Path, name: str, preset: str, batch: int, steps: int, log_every: int, source: str,
                 workers: int) -> RunConfig:
    """Stage 2 in pixel space on MNIST: U-Net + DDGAN of `preset`, ZeRO-2, one thread per worker."""
    return load_config(RunConfig, None, [
        f"name={name}", f"output_dir={out}", "space=pixel", f"data.source={source}", f"ldm.preset={preset}",
        f"ddgan.preset={preset}", f"stage2.steps={steps}", f"stage2.batch_size={batch}",
        f"stage2.log_every={log_every}", f"stage2.checkpoint_every={steps}", "stage2.sample_every=0",
        "stage2.num_samples=4", f"distributed.num_workers={workers}", "distributed.cpus_per_worker=1",
        "distributed.zero_stage=2", "distributed.max_failures=0", "device=cpu"])


def write_mnist_shards(dest: Path) -> str:
    """The embedded MNIST as image shards in a local folder (what the full path streams)."""
    from distdiff.data import write_image_shards
    from distdiff.data.formats import embedded_mnist

    if not (dest / "manifest.json").exists():
        write_image_shards(embedded_mnist(), str(dest), shard_size=500)
    return str(dest)


def _timed_loop(cfg: RunConfig, make_engine, steps: int, warmup: int, rank: int = 0, world_size: int = 1,
                start_together=None) -> tuple[float, float]:
    """Steps per wall second and per CPU second of a bare loop over this rank's in-memory batches:
    the stage-2 networks on engines from `make_engine`, their EMAs, the joint task, one thread."""
    from distdiff.tasks import LatentSource, build_stage2
    from distdiff.train.data_source import build_source_stream
    from distdiff.train.ema import EMA
    from distdiff.train.engines import EngineSet

    torch.set_num_threads(1)
    torch.manual_seed(cfg.seed)
    setup = build_stage2(cfg, LatentSource(None), (1, 32, 32), (1, 32, 32), None)
    engines = EngineSet({name: make_engine(name, net.module, net.optim, net.optimizer)
                         for name, net in setup.networks.items()})
    emas = {name: EMA(engines[name], net.ema_decay)
            for name, net in setup.networks.items() if net.ema_decay is not None}
    task = setup.task
    stream = iter(build_source_stream(DataConfig(source="embedded-mnist"), cfg.stage2.batch_size, rank,
                                      world_size, cfg.seed))
    batches = [next(stream) for _ in range(8)]
    generator = torch.Generator().manual_seed(cfg.seed + rank)
    start = cpu_start = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            if start_together:
                start_together()
            start, cpu_start = time.perf_counter(), time.process_time()
        task.step(batches[step % len(batches)], engines, step, generator)
        for name, ema in emas.items():
            ema.update(engines[name])
    return steps / (time.perf_counter() - start), steps / (time.process_time() - cpu_start)


def plain_pytorch_rate(cfg: RunConfig, steps: int, warmup: int, start_together=None) -> tuple[float, float]:
    """Steps per wall second and per CPU second of a bare loop: same networks and task, torch
    optimizers, batches already in memory. `start_together` is called once the warm-up is done."""
    from distdiff.train.backends import TorchBackend

    factory = TorchBackend().engine_factory(cfg, cfg.stage2.batch_size, frozenset())
    return _timed_loop(cfg, factory, steps, warmup, start_together=start_together)


def _spawned(target, processes: int, *args) -> list:
    """Run `target(rank, *args, results)` in `processes` fresh processes and return what they put on
    `results`. A child that fails raises here rather than leaving this process waiting for its value."""
    import torch.multiprocessing as mp

    results = mp.get_context("spawn").SimpleQueue()
    mp.start_processes(target, args=(*args, results), nprocs=processes, join=True, start_method="spawn")
    values = []
    while not results.empty():
        values.append(results.get())
    return values


def _plain_rate_child(rank: int, cfg: RunConfig, steps: int, warmup: int, start, results) -> None:
    # All loops start together, so they overlap for the whole measurement.
    results.put(plain_pytorch_rate(cfg, steps, warmup, start_together=start.wait)[0])


def independent_plain_rate(cfg: RunConfig, steps: int, warmup: int, processes: int) -> float:
    """Summed steps per wall second of `processes` plain loops run side by side in separate processes
    (1 thread each, nothing shared): what this machine's cores give without Ray or communication."""
    import torch.multiprocessing as mp

    start = mp.get_context("spawn").Barrier(processes)
    return sum(_spawned(_plain_rate_child, processes, cfg, steps, warmup, start))


def _deepspeed_child(rank: int, world_size: int, init_file: str, cfg: RunConfig, steps: int, warmup: int,
                     results) -> None:
    import torch.distributed as dist

    from distdiff.train.deepspeed_engines import deepspeed_engine_factory

    os.environ["LOCAL_RANK"] = str(rank)  # DeepSpeed insists on it; one machine, so local = global
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        factory = deepspeed_engine_factory(cfg.distributed, "fp32", cfg.stage2.batch_size)
        rate = _timed_loop(cfg, factory, steps, warmup, rank, world_size, start_together=dist.barrier)[0]
        if rank == 0:
            results.put(rate * cfg.stage2.batch_size * world_size)
    finally:
        dist.destroy_process_group()


def deepspeed_without_ray_rate(cfg: RunConfig, steps: int, warmup: int, processes: int) -> float:
    """Images per wall second of `processes` local processes joined by a gloo group, each training
    the same networks on DeepSpeed engines (the ZeRO stage of `cfg`) over in-memory batches: the
    distributed training step without Ray and without streaming."""
    with tempfile.TemporaryDirectory(prefix="distdiff-bench-") as tmp:
        (images_per_s,) = _spawned(_deepspeed_child, processes, processes, str(Path(tmp) / "rendezvous"), cfg,
                                   steps, warmup)
    return images_per_s


def distributed_rate(cfg: RunConfig) -> tuple[float, float]:
    """Steady-state images per wall second and per CPU second of rank 0 in a Ray + DeepSpeed run
    (medians of the logging windows after the first)."""
    from distdiff.launchers.ray import train_ldm

    train_ldm(cfg)
    records = read_metrics(Path(cfg.output_dir) / cfg.name / "ldm" / "metrics.jsonl")[1:]
    wall = statistics.median(r["images_per_sec"] for r in records)
    cpu = statistics.median(r["images_per_sec"] / r["cpu_util"] for r in records)
    return wall, cpu


def run_benchmark(preset: str = "small", batch: int = 16, steps: int = 20, warmup: int = 4, out: str | None = None,
                  scaling: bool = True, repeats: int = 1) -> dict:
    """Measure and print both ratios; returns the figures.

    Args:
        preset: U-Net and DDGAN preset ("tiny", "small", ...).
        batch: samples per worker per step.
        steps: measured steps (the distributed runs train `warmup + steps` and drop the first window).
        warmup: steps excluded from the timing.
        out: folder for the shards and runs (default: a temporary folder).
        scaling: also run the 2-worker measurement.
        repeats: 1-worker (and 2-worker) runs, back to back in pairs; the ratios are the medians over
            the pairs, so that a slow spell of a shared machine lands in one pair, not in the figure.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    load_start = os.getloadavg()[0]
    root = Path(out or tempfile.mkdtemp(prefix="distdiff-bench-"))
    source = write_mnist_shards(root / "mnist-shards")
    total = warmup + steps
    configs = [(bench_config(root, f"bench-1w-{i}", preset, batch, total, warmup, source, 1),
                bench_config(root, f"bench-2w-{i}", preset, batch, total, warmup, source, 2)) for i in range(repeats)]
    one, two = configs[0]
    # The plain loop runs before and after the distributed runs and its faster pass counts, so a
    # burst of load from other processes during one pass does not flatter the distributed path.
    plain_before = plain_pytorch_rate(one, steps, warmup)
    pairs = [(distributed_rate(cfg_one), distributed_rate(cfg_two) if scaling else None) for cfg_one, cfg_two in configs]
    wall = statistics.median(rate_one[0] for rate_one, _ in pairs)
    cpu = statistics.median(rate_one[1] for rate_one, _ in pairs)
    full, full_cpu = wall / batch, cpu / batch
    results = {"preset": preset, "batch_per_worker": batch, "repeats": repeats, "distributed_1w_steps_per_s": full,
               "distributed_1w_steps_per_cpu_s": full_cpu}
    if scaling:
        ratios = [rate_two[0] / rate_one[0] for rate_one, rate_two in pairs]
        results.update({"distributed_2w_images_per_s": statistics.median(rate_two[0] for _, rate_two in pairs),
                        "distributed_1w_images_per_s": wall, "scaling_2w_over_1w": statistics.median(ratios),
                        "scaling_2w_over_1w_each_pair": ratios,
                        "scaling_2w_over_1w_cpu_normalized": statistics.median(
                            rate_two[1] / rate_one[1] for rate_one, rate_two in pairs),
                        # The machine's own ceiling for the same comparison: two independent loops.
                        "plain_2_processes_over_1": independent_plain_rate(one, steps, warmup, 2)
                        / independent_plain_rate(one, steps, warmup, 1),
                        # The distributed step alone: DeepSpeed engines and their collectives, no Ray.
                        "deepspeed_without_ray_2_processes_over_1": deepspeed_without_ray_rate(two, steps, warmup, 2)
                        / deepspeed_without_ray_rate(two, steps, warmup, 1)})
    plain_after = plain_pytorch_rate(one, steps, warmup)
    plain = max(plain_before[0], plain_after[0])
    plain_cpu = max(plain_before[1], plain_after[1])
    results.update({"plain_steps_per_s": plain, "plain_passes_steps_per_s": [plain_before[0], plain_after[0]],
                    "plain_steps_per_cpu_s": plain_cpu, "overhead_ratio": full / plain,
                    "overhead_ratio_cpu_time": full_cpu / plain_cpu, "cpu_cores": os.cpu_count(),
                    "load_average_start_end": [load_start, os.getloadavg()[0]]})
    _print(results)
    return results


def _print(results: dict) -> None:
    print("\ntraining throughput (stage 2: U-Net + DDGAN generator + discriminator, pixel space, CPU)")
    print(f"  preset {results['preset']}, batch {results['batch_per_worker']} per worker, 1 thread per worker; "
          f"{results['cpu_cores']} cores, load average {results['load_average_start_end'][0]:.1f} at the start, "
          f"{results['load_average_start_end'][1]:.1f} at the end")
    passes = ", ".join(f"{r:.3f}" for r in results["plain_passes_steps_per_s"])
    print(f"  plain PyTorch loop, in-memory batches : {results['plain_steps_per_s']:.3f} steps/s (passes: {passes})")
    print(f"  Ray + DeepSpeed + streaming, 1 worker : {results['distributed_1w_steps_per_s']:.3f} steps/s")
    print(f"  ratio (target >= 0.9)                 : {results['overhead_ratio']:.3f}")
    print(f"  same per CPU second (the share of the cores each process got cancels out): "
          f"{results['distributed_1w_steps_per_cpu_s']:.3f} vs {results['plain_steps_per_cpu_s']:.3f} steps, "
          f"ratio {results['overhead_ratio_cpu_time']:.3f}")
    if "scaling_2w_over_1w" in results:
        print(f"  1 worker  : {results['distributed_1w_images_per_s']:.1f} images/s")
        print(f"  2 workers : {results['distributed_2w_images_per_s']:.1f} images/s")
        each = ", ".join(f"{r:.3f}" for r in results["scaling_2w_over_1w_each_pair"])
        print(f"  scaling 2 workers / 1 worker (target >= 1.7): {results['scaling_2w_over_1w']:.3f} "
              f"(median of {results['repeats']} back-to-back pairs: {each})")
        print(f"  same with each worker's rate per CPU second it got (removes what Ray's own processes and "
              f"other load took): {results['scaling_2w_over_1w_cpu_normalized']:.3f}")
        print(f"  this machine's ceiling: 2 independent plain loops (no Ray, no communication) / 1 loop: "
              f"{results['plain_2_processes_over_1']:.3f}")
        print(f"  DeepSpeed engines in 2 gloo processes / 1 process, in-memory batches, no Ray: "
              f"{results['deepspeed_without_ray_2_processes_over_1']:.3f}")
