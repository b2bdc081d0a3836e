"""Running the evaluator on N local processes joined by a torch.distributed gloo group.

No cluster needed: the processes rendezvous through a file, each calls `evaluate_worker` with
`torch_distributed_reduce_sum`, and rank 0's results come back to the caller. The Ray job does
the same across machines (distdiff.launchers.ray_eval).
"""

from __future__ import annotations

import json
import tempfile
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from distdiff.eval.evaluator import EvalSettings, evaluate_worker
from distdiff.eval.stats import torch_distributed_reduce_sum

GLOO_TIMEOUT = timedelta(minutes=30)


def _process(rank: int, world_size: int, init_file: str, result_file: str, settings: EvalSettings,
             threads: int, injected: dict) -> None:
    torch.set_num_threads(threads)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size,
                            timeout=GLOO_TIMEOUT)
    try:
        results = evaluate_worker(rank, world_size, torch_distributed_reduce_sum, settings, **injected)
        if rank == 0:
            Path(result_file).write_text(json.dumps(results))
    finally:
        dist.destroy_process_group()


def evaluate_multiprocess(settings: EvalSettings, world_size: int, threads: int = 1, **injected) -> dict:
    """Evaluate with `world_size` local worker processes.

    Args:
        settings: what to evaluate.
        world_size: number of processes.
        threads: torch threads per process.
        **injected: picklable `sources`, `extractor`, `reference` or `classifier` for every worker.

    Returns:
        rank 0's results dict.
    """
    with tempfile.TemporaryDirectory(prefix="distdiff-eval-") as tmp:
        init_file, result_file = str(Path(tmp) / "rendezvous"), str(Path(tmp) / "results.json")
        mp.start_processes(_process, args=(world_size, init_file, result_file, settings, threads, injected),
                           nprocs=world_size, join=True, start_method="spawn")
        return json.loads(Path(result_file).read_text())
