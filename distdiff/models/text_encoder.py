"""A small transformer text encoder, trained from scratch with the U-Net that reads it.

Token ids (B, L) -> features (B, L, width) and the mask of real tokens (B, L). Pre-LayerNorm blocks
(self-attention over the unpadded tokens, then an MLP), learned positions. Pad id is 0; every
sequence starts with a begin token, so no row is all padding (see `distdiff.text`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

PAD_ID = 0  # `distdiff.text.PAD`; models import torch only, so the id is restated here


class TextBlock(nn.Module):
    """Pre-LN transformer block: x + attn(LN(x)), then x + MLP(LN(x)).

    Args:
        width: feature width (divisible by heads).
        heads: attention heads.
    """

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"text encoder width {width} not divisible by heads {heads}")
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: (B, L, width); mask: (B, L) bool, True for real tokens -> (B, L, width)."""
        b, length, width = x.shape
        qkv = self.qkv(self.norm1(x)).view(b, length, 3, self.heads, width // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, heads, L, dim) each
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])  # (B, heads, L, dim)
        x = x + self.proj(out.transpose(1, 2).reshape(b, length, width))
        return x + self.mlp(self.norm2(x))


class TextEncoder(nn.Module):
    """Token ids to contextual features.

    Args:
        vocab_size: number of token ids.
        max_length: longest token sequence (positions).
        width: feature width.
        layers: transformer blocks.
        heads: attention heads per block.
    """

    def __init__(self, vocab_size: int, max_length: int, width: int = 64, layers: int = 2, heads: int = 4):
        super().__init__()
        self.max_length = max_length
        self.token = nn.Embedding(vocab_size, width)
        self.position = nn.Parameter(torch.randn(max_length, width) * 0.02)
        self.blocks = nn.ModuleList(TextBlock(width, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(width)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens: (B, L) int64, L <= max_length -> (features (B, L, width), mask (B, L) bool)."""
        if tokens.ndim != 2 or tokens.shape[1] > self.max_length:
            raise ValueError(f"text tokens must be (B, L <= {self.max_length}), got {tuple(tokens.shape)}")
        mask = tokens != PAD_ID  # (B, L)
        x = self.token(tokens) + self.position[: tokens.shape[1]]  # (B, L, width)
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x), mask


def pooled(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the features of real tokens: (B, L, D), (B, L) -> (B, D)."""
    weights = mask.to(features.dtype)[..., None]  # (B, L, 1)
    return (features * weights).sum(1) / weights.sum(1).clamp(min=1.0)
