"""Normalisation layers: GroupNorm with a safe group count, adaptive GroupNorm, PixelNorm."""

from __future__ import annotations

import torch
from torch import nn


def valid_num_groups(channels: int, max_groups: int = 32) -> int:
    """Largest group count <= max_groups (and <= channels) that divides ``channels``.

    Small test models have 8 or 16 channels, where GroupNorm(32, C) would be invalid.

    Args:
        channels: number of channels to normalise.
        max_groups: upper bound on the group count (32 in DDPM / Stable Diffusion).

    Returns:
        A group count g with channels % g == 0.
    """
    if channels <= 0:
        raise ValueError(f"valid_num_groups: channels must be positive, got {channels}")
    for groups in range(min(max_groups, channels), 0, -1):
        if channels % groups == 0:
            return groups
    return 1


def group_norm(channels: int, max_groups: int = 32, eps: float = 1e-6, affine: bool = True) -> nn.GroupNorm:
    """GroupNorm over ``channels`` with a valid group count (see :func:`valid_num_groups`).

    Args:
        channels: number of channels.
        max_groups: upper bound on the group count.
        eps: numerical epsilon.
        affine: learn a per-channel scale and shift.

    Returns:
        An ``nn.GroupNorm`` module.
    """
    return nn.GroupNorm(valid_num_groups(channels, max_groups), channels, eps=eps, affine=affine)


class AdaptiveGroupNorm(nn.Module):
    """GroupNorm without its own affine, modulated by a style vector: ``gamma(s) * GN(x) + beta(s)``.

    The style projection's bias starts at gamma=1, beta=0 so that at init the layer is a plain
    GroupNorm whatever the style (as in StyleGAN2 / DDGAN's AdaptiveGroupNorm).

    Args:
        groups: requested group count (reduced to a valid one for small channel numbers).
        channels: number of channels of x.
        style_dim: width of the style vector.
    """

    def __init__(self, groups: int, channels: int, style_dim: int, eps: float = 1e-6):
        super().__init__()
        self.norm = nn.GroupNorm(valid_num_groups(channels, groups), channels, eps=eps, affine=False)
        self.style = nn.Linear(style_dim, 2 * channels)
        with torch.no_grad():
            self.style.bias[:channels].fill_(1.0)
            self.style.bias[channels:].zero_()

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """Normalise x (B, C, H, W) and modulate it with style (B, style_dim)."""
        gamma, beta = self.style(style)[:, :, None, None].chunk(2, dim=1)  # each (B, C, 1, 1)
        return torch.addcmul(beta, gamma, self.norm(x))


class PixelNorm(nn.Module):
    """Normalise each vector to unit root-mean-square over dim 1 (StyleGAN's mapping-network input)."""

    def __init__(self, eps: float = 1e-8):
        super().__init__()
        self.eps = eps

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z: (B, D, ...) -> same shape, unit RMS along D."""
        return z * torch.rsqrt(z.pow(2).mean(dim=1, keepdim=True) + self.eps)

