"""Training backends, chosen by the one config key `distributed.backend`.

A backend says how a worker builds its engines (objects of the `engines.Engine` protocol), which
layouts it can run, and what a resume needs before the workers start:

- "deepspeed": DeepSpeed ZeRO 0-3 engines (`deepspeed_engines.py`), any number of Ray workers; elastic,
  because a checkpoint written at another world size, ZeRO stage or precision is first converted to
  DeepSpeed's universal format (`universal.py`).
- "torch": plain PyTorch engines (`engines.TorchEngine`) in one process: `--local` runs, or a single
  Ray worker.
- "auto" (the default): "deepspeed" under Ray, "torch" with `--local`.

Another backend (FSDP, say) is one more class here with these members, plus its `Engine` class.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Callable, Protocol

from distdiff.config import RunConfig
from distdiff.train.checkpoint import CheckpointError
from distdiff.train.context import resolve_device
from distdiff.train.deepspeed_engines import ENGINE_META, deepspeed_engine_factory
from distdiff.train.engines import TorchEngine
from distdiff.train.fast import fused_optimizer
from distdiff.train.storage import Storage
from distdiff.train.universal import (
    UNIVERSAL_MARKER,
    convert_checkpoint,
    engine_dirs,
    engines_needing_universal,
    has_universal,
    universal_engines,
)


class TrainingBackend(Protocol):
    name: str
    engine_marker: str  # a file every engine folder of a checkpoint this backend wrote holds

    def check_layout(self, world_size: int) -> None:
        """Raise ValueError, naming the config key, for a world size this backend cannot run."""

    def engine_factory(self, cfg: RunConfig, batch_size: int, convert: frozenset[str]) -> Callable:
        """`make(name, module, optim_cfg, kind) -> Engine`; `convert` names the engines to restore from
        the conversion `prepare_resume` made."""

    def prepare_resume(self, checkpoints: Storage, name: str, world_size: int, cfg: RunConfig) -> None:
        """On the driver, before the workers start: make checkpoint `name` loadable at this layout."""

    def resume_conversions(self, checkpoint: Path, world_size: int, cfg: RunConfig) -> frozenset[str]:
        """On a worker, for its local copy of the checkpoint: the engines to restore from a conversion."""


def _refuse_foreign(backend: TrainingBackend, checkpoint: str, marked: dict[str, bool]) -> None:
    """Refuse a checkpoint another backend wrote.

    Args:
        checkpoint: its name or URL, for the message.
        marked: engine name -> whether its folder holds `backend.engine_marker`.

    Raises:
        CheckpointError: naming the checkpoint, the engine and the config key.
    """
    foreign = sorted(engine for engine, present in marked.items() if not present)
    if foreign:
        raise CheckpointError(
            f"{checkpoint}: engine(s) {', '.join(foreign)} were not written by the {backend.name!r} training "
            f"backend (no {backend.engine_marker}); resume with the distributed.backend that wrote them")


def check_stored(backend: TrainingBackend, checkpoints: Storage, name: str) -> list[str]:
    """`_refuse_foreign` for checkpoint `name` in storage; returns its engine names."""
    engines = checkpoints.child(name, "engines")
    names = engines.list_dirs()
    _refuse_foreign(backend, f"{checkpoints.uri}/{name}", {e: engines.exists(e, backend.engine_marker) for e in names})
    return names


def check_local(backend: TrainingBackend, checkpoint: Path) -> None:
    """`_refuse_foreign` for a local checkpoint folder."""
    _refuse_foreign(backend, checkpoint.name, {d.name: (d / backend.engine_marker).is_file()
                                               for d in engine_dirs(checkpoint)})


class DeepSpeedBackend:
    name = "deepspeed"
    engine_marker = ENGINE_META

    def check_layout(self, world_size: int) -> None:
        """Any world size."""

    def engine_factory(self, cfg: RunConfig, batch_size: int, convert: frozenset[str]) -> Callable:
        fused = fused_optimizer(cfg.perf, resolve_device(cfg.device).type)
        return deepspeed_engine_factory(cfg.distributed, cfg.precision, batch_size, convert, fused)

    def prepare_resume(self, checkpoints: Storage, name: str, world_size: int, cfg: RunConfig) -> None:
        """Convert checkpoint `name` to universal form when this run's layout differs from its own.

        Only the small per-engine `deepspeed.json` files are read unless a conversion is needed, so an
        ordinary resubmission costs a few requests.
        """
        if checkpoints.exists(name, UNIVERSAL_MARKER):
            return
        engines = checkpoints.child(name, "engines")
        metas = {e: json.loads(engines.read_text(e, self.engine_marker)) for e in check_stored(self, checkpoints, name)}
        if not universal_engines(metas, world_size, cfg.distributed, cfg.precision == "bf16"):
            return
        print(f"converting {checkpoints.uri}/{name} to a universal checkpoint for {world_size} worker(s)",
              flush=True)
        with tempfile.TemporaryDirectory(prefix="distdiff-universal-") as tmp:
            local = checkpoints.download(name, Path(tmp) / name, skip=("universal",))
            convert_checkpoint(local)
            for directory in engine_dirs(local):
                if (directory / "universal").is_dir():
                    checkpoints.upload(directory / "universal", f"{name}/engines/{directory.name}/universal")
        # The marker goes last: a crash mid-upload leaves a conversion that is simply redone.
        checkpoints.write_text("converted\n", name, UNIVERSAL_MARKER)

    def resume_conversions(self, checkpoint: Path, world_size: int, cfg: RunConfig) -> frozenset[str]:
        check_local(self, checkpoint)
        convert = engines_needing_universal(checkpoint, world_size, cfg.distributed, cfg.precision == "bf16")
        if convert and not has_universal(checkpoint):
            raise CheckpointError(f"{checkpoint.name} needs a universal conversion for {world_size} workers; "
                                  "the launcher converts it before the workers start")
        return convert


class TorchBackend:
    name = "torch"
    engine_marker = "model.safetensors"  # `TorchEngine.save` writes whole states: nothing to convert

    def check_layout(self, world_size: int) -> None:
        if world_size != 1:
            raise ValueError(f"distributed.backend 'torch' trains in one process; {world_size} workers need "
                             "distributed.backend 'deepspeed' (or 'auto')")

    def engine_factory(self, cfg: RunConfig, batch_size: int, convert: frozenset[str]) -> Callable:
        fused = fused_optimizer(cfg.perf, resolve_device(cfg.device).type)
        return lambda name, module, optim, kind: TorchEngine(module, optim, kind, fused)

    def prepare_resume(self, checkpoints: Storage, name: str, world_size: int, cfg: RunConfig) -> None:
        check_stored(self, checkpoints, name)

    def resume_conversions(self, checkpoint: Path, world_size: int, cfg: RunConfig) -> frozenset[str]:
        check_local(self, checkpoint)
        return frozenset()


_BACKENDS: dict[str, TrainingBackend] = {"deepspeed": DeepSpeedBackend(), "torch": TorchBackend()}


def training_backend(cfg: RunConfig, launcher: str, world_size: int | None = None) -> TrainingBackend:
    """The backend of `cfg` for a launcher ("ray" or "local"), checked before any worker starts.

    `distributed.backend: auto` is "deepspeed" under Ray and "torch" with --local.

    Raises:
        ValueError: the backend cannot run there; the message names the config key.
    """
    name = cfg.distributed.backend
    if name == "auto":
        name = "deepspeed" if launcher == "ray" else "torch"
    if launcher == "local" and name != "torch":
        raise ValueError(f"distributed.backend {name!r} needs a process group: run it through Ray "
                         "(without --local), or set distributed.backend to 'torch' or 'auto'")
    backend = _BACKENDS[name]
    backend.check_layout(cfg.distributed.num_workers if world_size is None else world_size)
    return backend
