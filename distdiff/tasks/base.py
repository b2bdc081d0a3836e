"""What a task needs from the training loop, and the helpers tasks share.

A task computes losses for one model family and asks an `Updater` to apply them. The updater is
supplied by `distdiff.train` (plain PyTorch optimizers locally, DeepSpeed engines under Ray), so
tasks know nothing about ranks, engines or devices beyond the batch they are given.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
from torch import nn


class Updater(Protocol):
    """The optimisation side of a training step, keyed by network name."""

    def module(self, name: str) -> nn.Module:
        """The callable to run the network `name` forward with (its engine, if any)."""

    def update(self, name: str, loss: torch.Tensor) -> dict[str, float]:
        """Backward `loss`, clip, step and zero the grads of network `name`; returns e.g. grad_norm."""


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite; training stops before anything is saved."""


def check_finite(name: str, loss: torch.Tensor) -> None:
    """Raise NonFiniteLossError naming the loss when it is NaN or infinite."""
    value = float(loss.detach())
    if not math.isfinite(value):
        raise NonFiniteLossError(f"{name} is {value}")


def set_requires_grad(module: nn.Module, flag: bool) -> None:
    """Freeze or unfreeze all parameters of a module."""
    for p in module.parameters():
        p.requires_grad_(flag)
