"""The engine seam, and plain-PyTorch engines: a network with its optimizer, LR schedule and clipping.

`Engine` is the surface the loop, the tasks (through `EngineSet`), the EMA, the checkpoints and the
exports use. `TorchEngine` (one process) and `DeepSpeedEngine` (`deepspeed_engines.py`) implement
it; another backend (FSDP, say) is one more class with these members.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from distdiff.config import OptimConfig


def make_optimizer(params, cfg: OptimConfig, kind: str = "adamw", fused: bool = False) -> torch.optim.Optimizer:
    """Adam or AdamW from an OptimConfig; `fused`: one fused kernel for all parameters (CPU or CUDA)."""
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[kind]
    return cls(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay, fused=fused or None)


def lr_factor(cfg: OptimConfig):
    """LR multiplier per optimizer step: linear warmup over `warmup_steps`, then 1 ("constant") or a
    half cosine from 1 to min_lr / lr over `decay_steps` ("cosine"), counted from the end of the warmup."""
    floor = cfg.min_lr / cfg.lr

    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule != "cosine" or cfg.decay_steps <= 0:
            return 1.0
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.decay_steps - cfg.warmup_steps))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


@runtime_checkable
class Engine(Protocol):
    """One network being trained, whatever runs the optimisation."""

    @property
    def module(self) -> nn.Module:
        """The network (its parameters may be shards, e.g. under ZeRO-3)."""

    @property
    def forward_module(self) -> nn.Module:
        """What tasks call to run the network in a training pass."""

    @property
    def collective_forward(self) -> bool:
        """True when a forward pass is a collective that every rank must run."""

    @property
    def lr(self) -> float: ...

    @property
    def partitioned(self) -> bool:
        """True when ranks hold only shards of the weights (ZeRO-3): `module` is then no full network."""

    def full_weights(self) -> contextlib.AbstractContextManager:
        """A block inside which `module` holds its full weights on every rank (a collective where
        `partitioned`; changes made inside are discarded there)."""

    def backward_step(self, loss: torch.Tensor) -> dict[str, float]:
        """Backward pass and optimizer step; returns statistics such as lr and grad_norm."""

    def save(self, directory: Path) -> None:
        """Write this rank's part of the engine state into `directory`."""

    def load(self, directory: Path) -> None:
        """Restore what `save` wrote (on every rank)."""

    def consolidate(self) -> dict:
        """Gather the complete fp32 state dict (a collective where weights are partitioned)."""

    def full_state_dict(self) -> dict:
        """The complete state dict (after `consolidate` on every rank where that is a collective)."""

    def destroy(self) -> None:
        """Release what the backend holds (before the process group goes)."""


class TorchEngine:
    """One trainable network with its optimizer, for single-process training.

    Args:
        module: the network, already on its device.
        cfg: optimizer settings (lr, betas, warmup, clipping).
        kind: "adamw" or "adam".
        fused: the fused optimizer kernel (`PerfConfig.fused_optimizer`).
    """

    def __init__(self, module: nn.Module, cfg: OptimConfig, kind: str = "adamw", fused: bool = False):
        self.module = module
        self.cfg = cfg
        self.optimizer = make_optimizer(module.parameters(), cfg, kind, fused)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor(cfg))

    @property
    def forward_module(self) -> nn.Module:
        """What tasks call to run the network."""
        return self.module

    collective_forward = False  # one process: nothing to wait for
    partitioned = False

    def full_weights(self) -> contextlib.AbstractContextManager:
        """Nothing to gather: the module is whole."""
        return contextlib.nullcontext()

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def consolidate(self) -> dict:
        """The module's state dict (nothing to gather in one process)."""
        return self.full_state_dict()

    def full_state_dict(self) -> dict:
        """The complete module state dict (DeepSpeed engines gather partitioned weights here)."""
        return self.module.state_dict()

    def destroy(self) -> None:
        """Nothing to release."""

    def backward_step(self, loss: torch.Tensor) -> dict[str, float]:
        """Backward, clip, optimizer and scheduler step, zero grads."""
        loss.backward()
        stats = {"lr": self.lr}
        if self.cfg.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.cfg.grad_clip)
            stats["grad_norm"] = float(norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return stats

    def save(self, directory: Path) -> None:
        """Write weights (safetensors) and optimizer/scheduler state into `directory`."""
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.module.state_dict().items()}
        save_file(state, str(directory / "model.safetensors"))
        torch.save(
            {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()},
            directory / "optimizer.pt",
        )

    def load(self, directory: Path) -> None:
        """Restore what `save` wrote."""
        device = next(self.module.parameters()).device
        self.module.load_state_dict(load_file(str(directory / "model.safetensors"), device=str(device)))
        state = torch.load(directory / "optimizer.pt", map_location=device, weights_only=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])


class EngineSet:
    """Engines keyed by network name; the `Updater` that tasks step through."""

    def __init__(self, engines: dict[str, Engine]):
        self.engines = dict(engines)

    def module(self, name: str) -> nn.Module:
        return self.engines[name].forward_module

    def update(self, name: str, loss: torch.Tensor) -> dict[str, float]:
        return self.engines[name].backward_step(loss)

    def items(self):
        return self.engines.items()

    def destroy(self) -> None:
        """Release every engine (before the process group goes)."""
        for engine in self.engines.values():
            engine.destroy()

    def __getitem__(self, name: str) -> Engine:
        return self.engines[name]
