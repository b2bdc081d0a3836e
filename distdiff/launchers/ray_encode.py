"""Encode image shards into latent shards with Ray tasks, a group of shards per task.

The work itself is `distdiff.data.latents`; this module only fans the shard groups out and
gathers the manifest entries. The driver writes the manifest once every task has finished.
"""

from __future__ import annotations

from typing import Callable

import ray

from distdiff.data.latents import encode_latent_shards
from distdiff.data.manifest import Manifest
from distdiff.launchers.ray_cluster import connect, worker_env


def _run_task(task: Callable, chunk: list[int]) -> list[dict]:
    return task(chunk)


def ray_map(num_cpus: float = 1, num_gpus: float = 0) -> Callable:
    """A `map_fn` for `encode_latent_shards` that runs each shard group as one Ray task."""

    def map_fn(task: Callable, chunks: list[list[int]]) -> list[list[dict]]:
        remote = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=2,
                            runtime_env={"env_vars": worker_env()})(_run_task)
        task_ref = ray.put(task)
        return ray.get([remote.remote(task_ref, chunk) for chunk in chunks])

    return map_fn


def encode_latents_with_ray(source: str, dest: str, encoder, batch_size: int = 64, overwrite: bool = False,
                            shards_per_task: int = 4, address: str | None = None, num_cpus: float = 1,
                            num_gpus: float = 0, num_cpus_local: int | None = None) -> Manifest:
    """Encode `source` image shards into latent shards at `dest` on a Ray cluster.

    Args:
        source, dest: folders or s3://bucket/prefix.
        encoder: picklable encoder, e.g. `distdiff.tasks.VAEEncoder(weights, device)`.
        batch_size: images per encoder call.
        overwrite: replace a dataset already at dest.
        shards_per_task: shards encoded by one task (one encoder load per task).
        address: Ray cluster address; None: `$RAY_ADDRESS`, else a private local instance (unless
            Ray is already initialised in this process).
        num_cpus, num_gpus: resources per task.
        num_cpus_local: CPUs of a locally started Ray instance.

    Returns:
        The latent dataset's manifest.
    """
    started = connect(address, num_cpus_local)
    try:
        return encode_latent_shards(source, dest, encoder, batch_size=batch_size, overwrite=overwrite,
                                    shards_per_task=shards_per_task, map_fn=ray_map(num_cpus, num_gpus))
    finally:
        if started:
            ray.shutdown()
