"""Timestep embeddings shared by the U-Net, the DDGAN generator and the DDGAN discriminator."""

from __future__ import annotations

import math

import torch
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps, as in the Transformer and DDPM.

    Args:
        t: timesteps, shape (B,) (a 0-d tensor is treated as one timestep), int64 or float.
        dim: embedding width; an odd width gets a zero last column.
        max_period: the longest wavelength; controls the lowest frequency.

    Returns:
        Float32 tensor (B, dim): ``[cos(t * f_k), sin(t * f_k)]`` over ``dim // 2`` geometric frequencies.
    """
    if dim <= 0:
        raise ValueError(f"timestep_embedding: dim must be positive, got {dim}")
    t = t.reshape(-1).to(torch.float32)  # (B,)
    half = dim // 2
    # Frequencies from 1 down to 1/max_period, geometrically spaced.
    exponent = torch.arange(half, dtype=torch.float32, device=t.device) * (-math.log(max_period) / max(half, 1))
    args = t[:, None] * torch.exp(exponent)[None, :]  # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)  # (B, 2 * half)
    if dim % 2 == 1:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb


class TimestepMLP(nn.Module):
    """Sinusoidal timestep features followed by a two-layer MLP (Linear, act, Linear).

    Args:
        freq_dim: width of the sinusoidal features.
        out_dim: width of the returned embedding (also the hidden width).
        act: activation module between the two linear layers.
    """

    def __init__(self, freq_dim: int, out_dim: int, act: nn.Module | None = None):
        super().__init__()
        self.freq_dim = freq_dim
        self.linear1 = nn.Linear(freq_dim, out_dim)
        self.act = act if act is not None else nn.SiLU()
        self.linear2 = nn.Linear(out_dim, out_dim)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """Embed timesteps t (B,) into (B, out_dim)."""
        emb = timestep_embedding(t, self.freq_dim).to(self.linear1.weight.dtype)  # (B, freq_dim)
        return self.linear2(self.act(self.linear1(emb)))  # (B, out_dim)
