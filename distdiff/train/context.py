"""The context the training loop runs in: ranks, device, reporting and checkpoint storage.

`LocalContext` is one process writing checkpoints into a local folder; the Ray context in
`distdiff/train/ray_context.py` implements the same methods on top of Ray Train.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any, Protocol

import torch

from distdiff.train import preemption
from distdiff.train.checkpoint import COMPLETE_MARKER, list_complete, local_damage, newest_intact, prune, step_dir_name


class TrainContext(Protocol):
    """What the loop needs from its surroundings."""

    rank: int
    world_size: int
    device: torch.device

    def latest_checkpoint(self) -> Path | None: ...
    def begin_checkpoint(self, step: int) -> Path: ...
    def commit_checkpoint(self, staging: Path, step: int, metrics: dict) -> None: ...
    def report(self, metrics: dict) -> None: ...
    def all_gather_object(self, obj: Any) -> list: ...
    def barrier(self) -> None: ...
    def poll_preemption(self) -> str | None: ...


def warn(message: str) -> None:
    """One "warning: ..." line on stderr (the driver's and the workers' one format)."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but no CUDA device is available")
    return torch.device(name)


class LocalContext:
    """A single process; checkpoints under `<stage_dir>/checkpoints/step-XXXXXXXX`.

    A checkpoint is written into a hidden `.partial-*` folder, marked complete, then renamed into
    place, so the newest complete folder is always a whole checkpoint.
    """

    rank = 0
    world_size = 1

    def __init__(self, stage_dir: str | Path, device: torch.device, keep_checkpoints: int = 3):
        self.stage_dir = Path(stage_dir)
        self.checkpoint_root = self.stage_dir / "checkpoints"
        self.device = device
        self.keep = keep_checkpoints

    def latest_checkpoint(self) -> Path | None:
        """The newest complete checkpoint whose files are whole (damaged ones are passed over, with
        a warning)."""
        by_name = {p.name: p for p in list_complete(self.checkpoint_root)}
        name = newest_intact(reversed(list(by_name)), lambda n: local_damage(by_name[n]), str(self.checkpoint_root),
                             warn)
        return by_name[name] if name else None

    def begin_checkpoint(self, step: int) -> Path:
        staging = self.checkpoint_root / f".partial-{step_dir_name(step)}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        return staging

    def commit_checkpoint(self, staging: Path, step: int, metrics: dict) -> None:
        (staging / COMPLETE_MARKER).write_text(f"step {step}\n")
        final = self.checkpoint_root / step_dir_name(step)
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
        prune(self.checkpoint_root, self.keep)

    def report(self, metrics: dict) -> None:
        pass

    def all_gather_object(self, obj: Any) -> list:
        return [obj]

    def barrier(self) -> None:
        pass

    def poll_preemption(self) -> str | None:
        """A pending SIGUSR1 (save) / SIGTERM (save and stop), once `preemption.install_handlers()` ran."""
        return preemption.poll()
