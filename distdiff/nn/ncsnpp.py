"""Layers of the NCSN++ network family (Song et al. 2021) as the DDGAN generator uses them.

- `BigGANResBlock`: BigGAN-style residual block with adaptive GroupNorm (the mapped latent z
  modulates both norms), FIR up/downsampling inside the block, a timestep bias after the first
  convolution, a 1x1 skip convolution when the shape changes, and (x + h) / sqrt(2).
- `SelfAttention`: single-head spatial attention with a (x + h) / sqrt(2) residual.
- `ncsnpp_groups`: NCSN++'s GroupNorm group count, min(C // 4, 32).

Initialisation follows the reference networks (see `distdiff.nn.init`): the last convolution of a
residual branch and of an attention block start at almost zero.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from distdiff.nn.init import DENSE_FAN_MODE, conv1x1, conv3x3, dense, variance_scaling_
from distdiff.nn.norm import AdaptiveGroupNorm, valid_num_groups
from distdiff.nn.resample import FIRResample

SKIP_SCALE = 1.0 / math.sqrt(2.0)


def ncsnpp_groups(channels: int) -> int:
    """GroupNorm groups of NCSN++: min(C // 4, 32), lowered to a divisor of C for odd widths."""
    return valid_num_groups(channels, max(1, min(channels // 4, 32)))


def adaptive_norm(channels: int, style_dim: int) -> AdaptiveGroupNorm:
    """AdaptiveGroupNorm with NCSN++ groups; its style projection initialised like the reference code."""
    norm = AdaptiveGroupNorm(ncsnpp_groups(channels), channels, style_dim)
    variance_scaling_(norm.style.weight, 1.0, DENSE_FAN_MODE)  # the bias keeps gamma = 1, beta = 0
    return norm


class BigGANResBlock(nn.Module):
    """Residual block: AdaGN, SiLU, [FIR up/down], conv, + dense(temb), AdaGN, SiLU, dropout, conv.

    Args:
        in_ch, out_ch: channels.
        temb_dim: width of the timestep embedding.
        style_dim: width of the mapped latent z.
        resample: None, "up" or "down" (factor 2, applied to both branches).
        dropout: dropout before the second convolution.
    """

    def __init__(self, in_ch: int, out_ch: int, temb_dim: int, style_dim: int, resample: str | None = None,
                 dropout: float = 0.0):
        super().__init__()
        self.norm1 = adaptive_norm(in_ch, style_dim)
        self.resample = FIRResample(resample) if resample else None
        self.conv1 = conv3x3(in_ch, out_ch)
        self.temb_proj = dense(temb_dim, out_ch)
        self.norm2 = adaptive_norm(out_ch, style_dim)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = conv3x3(out_ch, out_ch, scale=0.0)
        self.skip = conv1x1(in_ch, out_ch) if (in_ch != out_ch or resample) else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """x: (B, in_ch, H, W), temb: (B, temb_dim), style: (B, style_dim) -> (B, out_ch, H', W')."""
        h = F.silu(self.norm1(x, style))
        if self.resample is not None:
            h, x = self.resample(h), self.resample(x)
        h = self.conv1(h) + self.temb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h, style))))
        if self.skip is not None:
            x = self.skip(x)
        return (x + h) * SKIP_SCALE


class SelfAttention(nn.Module):
    """Single-head self-attention over the H*W positions, residual scaled by 1/sqrt(2).

    Args:
        channels: C; queries, keys and values are C wide.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.GroupNorm(ncsnpp_groups(channels), channels, eps=1e-6)
        self.q, self.k, self.v = (dense(channels, channels, scale=0.1) for _ in range(3))
        self.out = dense(channels, channels, scale=0.0)

    def forward(self, x: torch.Tensor, *unused) -> torch.Tensor:
        """x: (B, C, H, W) -> (B, C, H, W)."""
        b, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (B, L, C)
        attended = F.scaled_dot_product_attention(
            self.q(tokens)[:, None], self.k(tokens)[:, None], self.v(tokens)[:, None])[:, 0]  # (B, L, C)
        out = self.out(attended).transpose(1, 2).reshape(b, c, h, w)
        return (x + out) * SKIP_SCALE
