"""Weight initialisation of the DDPM / NCSN++ family: variance scaling with a uniform distribution.

`variance_scaling_(w, scale, mode)` draws w ~ U(-b, b) with b = sqrt(3 * scale / fan), the JAX /
TF initialiser that DDPM, NCSN++ and the DDGAN networks use. A scale of 0 means 1e-10 (an almost
zero layer that still passes gradients), for the last layer of residual branches.

The DDGAN reference code builds its discriminator, mapping network and style projections with a
helper whose "fan_avg" mode falls through to fan_out; `DENSE_FAN_MODE` keeps that behaviour where
those layers are built here, so initial weight scales match the published networks.
"""

from __future__ import annotations

import math

import torch
from torch import nn

DENSE_FAN_MODE = "fan_out"


def _fans(weight: torch.Tensor) -> tuple[int, int]:
    """(fan_in, fan_out) of a Linear (out, in) or Conv (out, in, kh, kw) weight."""
    if weight.ndim < 2:
        raise ValueError(f"variance scaling needs a weight with >= 2 dims, got shape {tuple(weight.shape)}")
    receptive = math.prod(weight.shape[2:]) if weight.ndim > 2 else 1
    return weight.shape[1] * receptive, weight.shape[0] * receptive


@torch.no_grad()
def variance_scaling_(weight: torch.Tensor, scale: float = 1.0, mode: str = "fan_avg") -> torch.Tensor:
    """Fill `weight` in place from U(-b, b), b = sqrt(3 scale / fan); returns it.

    Args:
        weight: a Linear or Conv weight.
        scale: variance scale; 0 is replaced by 1e-10.
        mode: "fan_in", "fan_out" or "fan_avg" (the mean of both).
    """
    fan_in, fan_out = _fans(weight)
    fans = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}
    if mode not in fans:
        raise ValueError(f"unknown fan mode {mode!r}; valid: {', '.join(fans)}")
    variance = (1e-10 if scale == 0 else scale) / max(1.0, fans[mode])
    bound = math.sqrt(3.0 * variance)
    return weight.uniform_(-bound, bound)


def scaled_(layer: nn.Module, scale: float = 1.0, mode: str = "fan_avg") -> nn.Module:
    """Variance-scaling init of a Linear / Conv layer's weight and a zero bias; returns the layer."""
    variance_scaling_(layer.weight, scale, mode)
    if getattr(layer, "bias", None) is not None:
        with torch.no_grad():
            layer.bias.zero_()
    return layer


def conv3x3(in_ch: int, out_ch: int, scale: float = 1.0, mode: str = "fan_avg") -> nn.Conv2d:
    """3x3 'same' convolution with variance-scaling init."""
    return scaled_(nn.Conv2d(in_ch, out_ch, 3, padding=1), scale, mode)


def conv1x1(in_ch: int, out_ch: int, scale: float = 1.0, bias: bool = True, mode: str = "fan_avg") -> nn.Conv2d:
    """1x1 convolution with variance-scaling init."""
    return scaled_(nn.Conv2d(in_ch, out_ch, 1, bias=bias), scale, mode)


def dense(in_features: int, out_features: int, scale: float = 1.0, mode: str = "fan_avg") -> nn.Linear:
    """Linear layer with variance-scaling init and a zero bias."""
    return scaled_(nn.Linear(in_features, out_features), scale, mode)
