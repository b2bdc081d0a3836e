"""The evaluation job on Ray: N actors join one gloo process group and each runs `evaluate_worker`.

    ray job submit -- python launch/eval_fid.py --checkpoint s3://... --reference s3://... --workers 8

Joins the cluster named by `RAY_ADDRESS` (or the `address` argument), else starts a local one.
Rank 0's actor picks the rendezvous address (its node IP and a free port); every actor then
calls `torch.distributed.init_process_group("gloo")` and evaluates its share, so the reduction is
the same `torch_distributed_reduce_sum` as with plain processes. The first failing actor stops the
job: its error is raised and the other actors (blocked in a collective) are killed.
"""

from __future__ import annotations

import json
import socket
import sys
from datetime import timedelta

import ray

from distdiff.eval.evaluator import EvalSettings, evaluate_worker, preflight
from distdiff.launchers.ray_cluster import connect, worker_env

GLOO_TIMEOUT = timedelta(minutes=60)


class EvalWorker:
    """One evaluation worker (a Ray actor)."""

    def __init__(self, rank: int, world_size: int):
        self.rank, self.world_size = rank, world_size

    def rendezvous(self) -> tuple[str, int]:
        """This node's IP and a free TCP port for the gloo store (called on rank 0)."""
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        return ray.util.get_node_ip_address(), port

    def run(self, settings: EvalSettings, master: tuple[str, int] | None) -> dict | None:
        """Join the group and evaluate this rank's share; rank 0 returns the results."""
        import torch.distributed as dist

        from distdiff.eval.stats import local_reduce_sum, torch_distributed_reduce_sum

        if self.world_size == 1:
            return evaluate_worker(0, 1, local_reduce_sum, settings)
        host, port = master
        dist.init_process_group("gloo", init_method=f"tcp://{host}:{port}", rank=self.rank,
                                world_size=self.world_size, timeout=GLOO_TIMEOUT)
        try:
            return evaluate_worker(self.rank, self.world_size, torch_distributed_reduce_sum, settings)
        finally:
            dist.destroy_process_group()


def _wait_all(refs: list, actors: list) -> list:
    """Results of every actor; on the first failure, kill the rest and raise that failure."""
    pending, results = list(refs), {}
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        try:
            results[ready[0]] = ray.get(ready[0])
        except Exception:
            for actor in actors:
                ray.kill(actor)
            raise
    return [results[r] for r in refs]


def run_eval_ray(settings: EvalSettings, num_workers: int = 1, address: str | None = None,
                 cpus_per_worker: float = 1.0, gpus_per_worker: float = 0.0,
                 num_cpus_local: int | None = None) -> dict:
    """Evaluate with `num_workers` Ray actors.

    Args:
        settings: what to evaluate (plain data, shipped to every actor).
        num_workers: number of actors (ranks).
        address: Ray address; default `RAY_ADDRESS`, else a local cluster is started.
        cpus_per_worker, gpus_per_worker: resources of each actor.
        num_cpus_local: CPUs of a locally started cluster (default: all).

    Returns:
        rank 0's results dict.
    """
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    started = connect(address, num_cpus_local)
    actor_cls = ray.remote(num_cpus=cpus_per_worker, num_gpus=gpus_per_worker, max_restarts=0,
                           runtime_env={"env_vars": worker_env()})(EvalWorker)
    actors = [actor_cls.remote(rank, num_workers) for rank in range(num_workers)]
    try:
        master = ray.get(actors[0].rendezvous.remote()) if num_workers > 1 else None
        refs = [actor.run.remote(settings, master) for actor in actors]
        return _wait_all(refs, actors)[0]
    finally:
        for actor in actors:
            ray.kill(actor)
        if started:
            ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    """Entry point of `launch/eval_fid.py`: parse, evaluate (Ray or in-process), print the table."""
    from distdiff.eval.cli import build_parser, settings_from_args
    from distdiff.eval.report import results_markdown

    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
        preflight(settings)  # bad inputs fail here, in one line, before any worker starts
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("evaluation settings: " + json.dumps(settings.__dict__, default=list), flush=True)
    if args.workers == 0:
        from distdiff.eval.stats import local_reduce_sum

        results = evaluate_worker(0, 1, local_reduce_sum, settings)
    else:
        results = run_eval_ray(settings, args.workers, cpus_per_worker=args.cpus_per_worker,
                               gpus_per_worker=args.gpus_per_worker)
    print(results_markdown(results))
    for url in results.get("outputs", []):
        print(f"wrote {url}")
    return 0
