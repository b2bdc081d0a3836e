"""Joining a Ray cluster, and the environment distdiff's Ray workers get: once for the training,
evaluation and encoding launchers.

Credentials never travel this way (a runtime_env is visible to anyone with access to the cluster):
the workers read their own through the AWS SDK's default chain (see `distdiff.train.storage`).
"""

from __future__ import annotations

import os
from pathlib import Path

import ray

import distdiff
from distdiff.train.storage import AWS_SETTINGS

# What a worker on another node needs to find the same buckets, caches and weights.
PASSED_VARIABLES = (*AWS_SETTINGS, "DISTDIFF_CACHE", "DISTDIFF_INCEPTION_WEIGHTS", "DISTDIFF_INCEPTION_SHA1",
                    "DISTDIFF_VERBOSE")


def connect(address: str | None = None, num_cpus_local: int | None = None, dashboard: bool = False) -> bool:
    """Join the cluster at `address` or `$RAY_ADDRESS`, else start a private local instance; returns
    whether this call started Ray (False when this process was connected already).

    No runtime_env is passed here: inside `ray job submit` it would replace the job's own (its
    working_dir included); the workers get `worker_env()` instead.

    Args:
        address: a cluster address; None: `$RAY_ADDRESS`, else a new local instance.
        num_cpus_local: CPUs of a local instance (None: Ray counts them).
        dashboard: leave a local instance's dashboard to Ray's default (on where installed: Ray
            Train's controller asks it for actor states); False keeps it off.
    """
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        # "local": always a new instance, never a cluster some other process started on this machine.
        ray.init(address="local", num_cpus=num_cpus_local, include_dashboard=None if dashboard else False,
                 log_to_driver=True)
    return True


def worker_env() -> dict[str, str]:
    """Environment variables for distdiff's Ray workers: those of PASSED_VARIABLES that are set here,
    Ray Train's print patch (off unless set here) and, for a source checkout run in place, where
    distdiff lives (a job submitted with a working_dir ships it already). Call after `connect`."""
    env = {name: os.environ[name] for name in PASSED_VARIABLES if name in os.environ}
    # Ray Train sends a worker's print() to its logger and, where Ray has wrapped stdout, to stdout as
    # well: every line of ours reached the console twice. Plain prints reach the driver once.
    env["RAY_TRAIN_ENABLE_PRINT_PATCH"] = os.environ.get("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    package_parent = str(Path(distdiff.__file__).resolve().parents[1])
    installed = "site-packages" in package_parent or "dist-packages" in package_parent
    job_env = ray.get_runtime_context().runtime_env or {}
    if not installed and not job_env.get("working_dir"):
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, os.environ.get("PYTHONPATH")) if p)
    return env
