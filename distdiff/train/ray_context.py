"""The training loop's context on a Ray Train worker (the one context class that imports Ray).

Checkpoints: every rank writes its part into a local staging folder and hands it to
`ray.train.report`, which uploads all ranks' files into one folder of the run's storage; once every
rank has uploaded, rank 0 writes the COMPLETE marker into that folder, then prunes. Resume never asks
Ray which checkpoint is the latest (Ray can drop one reported just before a crash): it lists the
storage and takes the newest folder that carries the marker and whose files match their manifests.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
import ray.train
import torch
import torch.distributed as dist

from distdiff.train import preemption
from distdiff.train.checkpoint import COMPLETE_MARKER, local_damage, newest_intact, step_dir_name
from distdiff.train.context import warn
from distdiff.train.storage import Storage

PREEMPT_KV_PREFIX = "distdiff-preempt:"  # + run id; set by the driver on SIGTERM / SIGUSR1
KV_POLL_INTERVAL_S = 1.0


VERBOSE_ENV = "DISTDIFF_VERBOSE"  # "1": keep Ray Train's INFO lines (one per metrics report) on the console


def quiet_ray_train_logs() -> None:
    """Drop Ray Train's INFO line per `ray.train.report` (a full repr of the report, hundreds per run)
    from this worker's console, unless `$DISTDIFF_VERBOSE` asks for it."""
    if os.environ.get(VERBOSE_ENV) == "1":
        return
    try:  # Ray Train V2 names this logger after its source file
        from ray.train.v2._internal.execution import context as ray_train_context
    except ImportError:
        return
    logging.getLogger(ray_train_context.__file__).setLevel(logging.WARNING)


def driver_request_key(run_id: str) -> str:
    return PREEMPT_KV_PREFIX + run_id


def _read_driver_request(run_id: str) -> str | None:
    from ray.experimental.internal_kv import _internal_kv_get

    value = _internal_kv_get(driver_request_key(run_id))
    return value.decode() if value else None  # "<kind>:<count>": a repeated signal is a new value


class RayContext:
    """`TrainContext` for a Ray Train worker.

    Args:
        checkpoints: the storage folder holding this stage's `step-XXXXXXXX` checkpoints (the Ray
            run's experiment folder).
        device: this rank's device.
        keep: complete checkpoints to keep.
        run_id: key under which the driver forwards preemption notices.
        sync_dirs: local files and folders (rank 0) mirrored into storage at every checkpoint, e.g.
            the metrics log: {local path: storage path}.
        events: rank 0 appends one JSON line per resume here (which checkpoint, which step, how many
            workers), so restarts stay visible after the fact.
        drain_poll_every: ask Ray every this many steps whether a node of the run is being drained
            (preempted); the answer is a collective, so it is not asked every step.
    """

    def __init__(self, checkpoints: Storage, device: torch.device, keep: int, run_id: str,
                 sync_dirs: dict[Path, Storage] | None = None, events: Path | None = None,
                 drain_poll_every: int = 0):
        quiet_ray_train_logs()
        context = ray.train.get_context()
        self.rank = context.get_world_rank()
        self.world_size = context.get_world_size()
        self.device = device
        self.checkpoints = checkpoints
        self.keep = keep
        self.run_id = run_id
        self.sync_dirs = sync_dirs or {}
        self.events = events
        self.scratch = Path(tempfile.mkdtemp(prefix=f"distdiff-rank{self.rank}-"))
        self._resume: Path | None = None
        self._resume_resolved = False
        self._driver_request: str | None = None
        self._next_kv_poll = 0.0
        self.drain_poll_every = drain_poll_every
        self._polls = 0
        self._drain_seen = False

    # -- resume ----------------------------------------------------------------------------------

    def resolve_resume(self) -> Path | None:
        """Download the newest complete checkpoint of the storage (once); None when there is none.

        Every rank lists the storage after a barrier, so all agree on the same folder.
        """
        if self._resume_resolved:
            return self._resume
        self.barrier()
        # Every rank checks the same files, so all pass over the same damaged checkpoints.
        name = newest_intact(reversed(self.checkpoints.complete_names()), self._download_and_check,
                             self.checkpoints.uri, self._warn)
        if name is not None:
            self._resume = self.scratch / "resume" / name
            if self.rank == 0:
                print(f"resuming from {self.checkpoints.uri}/{name} (newest complete checkpoint)", flush=True)
                self._log_event({"event": "resume", "checkpoint": f"{self.checkpoints.uri}/{name}",
                                 "step": int(name.split("-")[1]), "world_size": self.world_size})
        self._resume_resolved = True
        return self._resume

    def _download_and_check(self, name: str) -> str | None:
        local = self.scratch / "resume" / name
        problem = local_damage(self.checkpoints.download(name, local))
        if problem is None:
            return None
        shutil.rmtree(local, ignore_errors=True)
        if self.rank == 0:
            self._log_event({"event": "damaged_checkpoint", "checkpoint": f"{self.checkpoints.uri}/{name}",
                             "problem": problem})
        return problem

    def _warn(self, message: str) -> None:
        if self.rank == 0:
            warn(message)

    def _log_event(self, record: dict) -> None:
        if self.events is None:
            return
        self.events.parent.mkdir(parents=True, exist_ok=True)
        with self.events.open("a") as f:
            f.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")

    def latest_checkpoint(self) -> Path | None:
        return self.resolve_resume()

    # -- saving ----------------------------------------------------------------------------------

    def begin_checkpoint(self, step: int) -> Path:
        name = step_dir_name(step)
        if self.rank == 0:
            # A folder of this name can only be a partial one from an attempt that crashed (a complete
            # one at this step would have been resumed from): clear it so no stale file mixes in.
            self.checkpoints.delete(name)
        self.barrier()
        staging = self.scratch / "staging" / name
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        return staging

    def commit_checkpoint(self, staging: Path, step: int, metrics: dict) -> None:
        name = step_dir_name(step)
        checkpoint = ray.train.Checkpoint.from_directory(str(staging))
        ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=name)
        self.barrier()  # every rank's files are in storage
        if self.rank == 0:
            self.checkpoints.write_text(f"step {step}\nworld_size {self.world_size}\n", name, COMPLETE_MARKER)
            self._prune()
            self.sync_outputs()
        shutil.rmtree(staging, ignore_errors=True)

    def _prune(self) -> None:
        steps = self.checkpoints.step_dirs()
        complete = [name for _, name, done in steps if done]
        for name in complete[: -self.keep]:
            self.checkpoints.delete(name)
        for _, name, done in steps:
            if not done:  # partial folders of crashed attempts
                self.checkpoints.delete(name)

    def sync_outputs(self) -> None:
        """Mirror rank 0's local output folders (metrics, TensorBoard, samples) into storage."""
        for local, remote in self.sync_dirs.items():
            if Path(local).exists():
                remote.upload(Path(local), "")

    # -- reporting and collectives ---------------------------------------------------------------

    def report(self, metrics: dict) -> None:
        ray.train.report(metrics)

    def all_gather_object(self, obj: Any) -> list:
        if self.world_size == 1:
            return [obj]
        gathered: list = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def _drain_notice(self) -> str | None:
        """SAVE once when Ray reports that a node of this run is being drained (spot reclaim etc.)."""
        self._polls += 1
        if not self.drain_poll_every or self._polls % self.drain_poll_every or self._drain_seen:
            return None
        if ray.train.get_preemption_info() is None:  # a collective: same call count on every rank
            return None
        self._drain_seen = True
        return preemption.SAVE

    @contextlib.contextmanager
    def worker_signals(self):
        """Within the block this worker process's SIGTERM / SIGUSR1 become preemption requests
        (outside it they keep Ray's meaning: SIGTERM ends the worker).

        Ray Train runs the training function in a thread and signal handlers can only be set on the
        main thread, so the handlers are installed by a task on this worker's own actor, which Ray
        runs on the main thread once the training thread has started.
        """
        actor = ray.get_runtime_context().current_actor
        installed = ray.get(actor.__ray_call__.remote(preemption.install_process_handlers))
        try:
            yield installed
        finally:
            if installed:
                ray.get(actor.__ray_call__.remote(preemption.restore_process_handlers))

    def poll_preemption(self) -> str | None:
        """A preemption request, the same on every rank: this process's signal, the driver's
        forwarded SIGTERM / SIGUSR1, or Ray's node-drain notice (a checkpoint, training goes on)."""
        local = preemption.strongest([preemption.poll(), self._drain_notice()])
        if self.rank == 0 and time.monotonic() >= self._next_kv_poll:
            self._next_kv_poll = time.monotonic() + KV_POLL_INTERVAL_S
            request = _read_driver_request(self.run_id)
            if request != self._driver_request:  # each new driver request counts once
                self._driver_request = request
                local = preemption.strongest([local, request.split(":")[0]])
        if self.world_size == 1:
            return local
        flag = torch.tensor([preemption.code(local)], dtype=torch.int64, device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return preemption.from_code(flag.item())

    def close(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)
