"""Exponential moving average of a network's weights, kept as a frozen copy of the network."""

from __future__ import annotations

import copy

import torch
from torch import nn

from distdiff.train.engines import Engine


def _full_copy(engine: Engine) -> nn.Module:
    """A plain copy of the engine's network with its full weights, also when ZeRO-3 partitions it."""
    module = engine.module
    if not engine.partitioned:
        copied = copy.deepcopy(module)
        # The average samples a few grids eagerly; a compiled forward (`nn.Module.compile`) would compile again.
        copied._compiled_call_impl = None
        return copied
    # A deepcopy would copy ZeRO-3's shards and hooks: rebuild the network from its recorded config
    # and load the gathered weights instead (collective: every rank builds its EMA).
    from distdiff.models import model_from_config

    device = next(module.parameters()).device
    fresh = model_from_config(module.model_config).to(device)
    with engine.full_weights():
        fresh.load_state_dict(module.state_dict())
    return fresh


class EMA:
    """A frozen copy of an engine's network whose parameters track an exponential moving average.

    The effective decay warms up as min(decay, (1 + n) / (10 + n)) over the n updates so far, so a
    short run is not dominated by the random initialisation. Buffers are copied as they are.
    Under ZeRO-3 every rank keeps a full EMA copy and `update` gathers the partitioned weights
    (`Engine.full_weights`), so it must be called on every rank.
    """

    def __init__(self, engine: Engine, decay: float):
        self.decay = decay
        self.num_updates = 0
        # fp32 even when the network trains in bf16 (DeepSpeed casts it): small updates must not
        # vanish in bf16 rounding, and samplers and exports expect fp32 weights.
        self.model = _full_copy(engine).float().eval().requires_grad_(False)

    def current_decay(self) -> float:
        """The decay used by the next update."""
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self, engine: Engine) -> None:
        """Move the average one step towards the engine's current parameters."""
        decay = self.current_decay()
        ema_params = list(self.model.parameters())
        module = engine.module
        with engine.full_weights():
            params = [p.detach().to(e.dtype) for p, e in zip(module.parameters(), ema_params)]
            torch._foreach_lerp_(ema_params, params, 1.0 - decay)
        for e, b in zip(self.model.buffers(), module.buffers()):
            e.copy_(b)
        self.num_updates += 1

    def state_dict(self) -> dict:
        return {k: v.detach().contiguous().cpu() for k, v in self.model.state_dict().items()}

    def load_state_dict(self, state: dict, num_updates: int) -> None:
        self.model.load_state_dict(state)
        self.num_updates = num_updates
