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


def positional_embedding(t: torch.Tensor, dim: int, max_positions: float = 10000.0) -> torch.Tensor:
    """NCSN++'s sinusoidal embedding, used by both DDGAN networks: ``[sin(t f_k), cos(t f_k)]``.

    It differs from :func:`timestep_embedding` in the order (sine first) and in the frequency
    spacing, f_k = max_positions^(-k / (dim/2 - 1)) for k < dim/2, so the lowest frequency is exactly
    1 / max_positions.

    Args:
        t: timesteps (B,) (a 0-d tensor is one timestep), int64 or float.
        dim: embedding width (>= 4; an odd width gets a zero last column).
        max_positions: inverse of the lowest frequency.

    Returns:
        Float32 tensor (B, dim).
    """
    if dim < 4:
        raise ValueError(f"positional_embedding: dim must be >= 4, got {dim}")
    t = t.reshape(-1).to(torch.float32)  # (B,)
    half = dim // 2
    steps = torch.arange(half, dtype=torch.float32, device=t.device)
    freqs = torch.exp(steps * (-math.log(max_positions) / (half - 1)))  # 1 down to 1 / max_positions
    args = t[:, None] * freqs[None, :]  # (B, half)
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    if dim % 2 == 1:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb


class TimestepMLP(nn.Module):
    """Sinusoidal timestep features followed by a two-layer MLP (Linear, act, Linear).

    Args:
        freq_dim: width of the sinusoidal features.
        out_dim: width of the returned embedding (also the hidden width).
        act: activation module between the two linear layers.
        features: "timestep" (:func:`timestep_embedding`, the DDPM U-Net's) or "positional"
            (:func:`positional_embedding`, the DDGAN networks').
    """

    def __init__(self, freq_dim: int, out_dim: int, act: nn.Module | None = None, features: str = "timestep"):
        super().__init__()
        if features not in EMBEDDINGS:
            raise ValueError(f"unknown timestep features {features!r}; valid: {', '.join(EMBEDDINGS)}")
        self.freq_dim = freq_dim
        self.features = features
        self.linear1 = nn.Linear(freq_dim, out_dim)
        self.act = act if act is not None else nn.SiLU()
        self.linear2 = nn.Linear(out_dim, out_dim)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """Embed timesteps t (B,) into (B, out_dim)."""
        emb = EMBEDDINGS[self.features](t, self.freq_dim).to(self.linear1.weight.dtype)  # (B, freq_dim)
        return self.linear2(self.act(self.linear1(emb)))  # (B, out_dim)


EMBEDDINGS = {"timestep": timestep_embedding, "positional": positional_embedding}
