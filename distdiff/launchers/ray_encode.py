"""Encode image shards into latent shards with Ray tasks, a group of shards per task.

The work itself is `distdiff.data.latents`; this module only fans the shard groups out and
gathers the manifest entries. The driver writes the manifest once every task has finished.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import ray

import distdiff
from distdiff.data.latents import encode_latent_shards
from distdiff.data.manifest import Manifest
from distdiff.train.storage import aws_settings


def _run_task(task: Callable, chunk: list[int]) -> list[dict]:
    return task(chunk)


def ray_map(num_cpus: float = 1, num_gpus: float = 0) -> Callable:
    """A `map_fn` for `encode_latent_shards` that runs each shard group as one Ray task."""

    def map_fn(task: Callable, chunks: list[list[int]]) -> list[list[dict]]:
        remote = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=2)(_run_task)
        task_ref = ray.put(task)
        return ray.get([remote.remote(task_ref, chunk) for chunk in chunks])

    return map_fn


def worker_env() -> dict:
    """Environment for Ray workers: the S3 endpoint and region (never credentials: workers use their own)
    and the path to distdiff."""
    env = aws_settings()
    package_root = str(Path(distdiff.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p)
    return env


def encode_latents_with_ray(source: str, dest: str, encoder, batch_size: int = 64, overwrite: bool = False,
                            shards_per_task: int = 4, address: str | None = None, num_cpus: float = 1,
                            num_gpus: float = 0, num_cpus_local: int | None = None) -> Manifest:
    """Encode `source` image shards into latent shards at `dest` on a Ray cluster.

    Args:
        source, dest: folders or s3://bucket/prefix.
        encoder: picklable encoder, e.g. `distdiff.data.VAEEncoder(weights, device)`.
        batch_size: images per encoder call.
        overwrite: replace a dataset already at dest.
        shards_per_task: shards encoded by one task (one encoder load per task).
        address: Ray cluster address ("auto" for a running cluster; None starts a private local
            instance), unless Ray is already initialised in this process.
        num_cpus, num_gpus: resources per task.
        num_cpus_local: CPUs of a locally started Ray instance.

    Returns:
        The latent dataset's manifest.
    """
    started = not ray.is_initialized()
    if started:
        # address "local" starts a private instance even when another Ray cluster runs on this machine
        ray.init(address=address or "local", num_cpus=num_cpus_local if address is None else None,
                 runtime_env={"env_vars": worker_env()}, include_dashboard=False, log_to_driver=False)
    try:
        return encode_latent_shards(source, dest, encoder, batch_size=batch_size, overwrite=overwrite,
                                    shards_per_task=shards_per_task, map_fn=ray_map(num_cpus, num_gpus))
    finally:
        if started:
            ray.shutdown()
