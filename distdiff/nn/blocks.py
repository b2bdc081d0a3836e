"""Convolutional building blocks: residual block, self-attention, up/down sampling."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from distdiff.nn.norm import group_norm


def zero_module(module: nn.Module) -> nn.Module:
    """Zero all parameters of ``module`` in place and return it.

    Used on the last layer of a residual branch so each block starts as the identity,
    which keeps deep U-Nets stable at initialisation.
    """
    with torch.no_grad():
        for p in module.parameters():
            p.zero_()
    return module


class ResBlock(nn.Module):
    """Pre-activation residual block: norm, SiLU, conv, (+ embedding), norm, SiLU, dropout, conv.

    Args:
        in_ch: input channels.
        out_ch: output channels; a 1x1 convolution maps the skip path when they differ.
        emb_dim: width of the (timestep) embedding added after the first conv; None for no embedding.
        dropout: dropout probability before the second conv.
        groups: maximum GroupNorm group count (reduced for small channel numbers).
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        emb_dim: int | None = None,
        dropout: float = 0.0,
        groups: int = 32,
    ):
        super().__init__()
        self.norm1 = group_norm(in_ch, groups)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, out_ch) if emb_dim is not None else None
        self.norm2 = group_norm(out_ch, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_module(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, in_ch, H, W); emb: (B, emb_dim) or None -> (B, out_ch, H, W)."""
        h = self.conv1(F.silu(self.norm1(x)))  # (B, out_ch, H, W)
        if self.emb_proj is not None:
            if emb is None:
                raise ValueError("ResBlock built with emb_dim needs an embedding, got None")
            h = h + self.emb_proj(F.silu(emb))[:, :, None, None]
        return self.skip(x) + self.conv2(self.dropout(F.silu(self.norm2(h))))


class AttentionBlock(nn.Module):
    """Spatial multi-head self-attention with a residual connection.

    GroupNorm, one linear layer for q/k/v over the H*W tokens, ``scaled_dot_product_attention``,
    zero-initialised linear output projection.

    Args:
        ch: channels (must be divisible by num_heads).
        num_heads: number of attention heads.
        groups: maximum GroupNorm group count.
    """

    def __init__(self, ch: int, num_heads: int = 1, groups: int = 32):
        super().__init__()
        if num_heads < 1 or ch % num_heads != 0:
            raise ValueError(f"AttentionBlock: channels {ch} not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.norm = group_norm(ch, groups)
        self.qkv = nn.Linear(ch, 3 * ch)
        self.proj = zero_module(nn.Linear(ch, ch))

    def forward(self, x: torch.Tensor, *unused) -> torch.Tensor:
        """x: (B, C, H, W) -> (B, C, H, W)."""
        b, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (B, L, C)
        # q, k, v: (B, heads, L, head_dim) views whose last dim is contiguous, as fused SDPA kernels need.
        qkv = self.qkv(tokens).view(b, h * w, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, L, head_dim)
        out = self.proj(out.transpose(1, 2).reshape(b, h * w, c))  # (B, L, C)
        # (B, L, C) -> (B, C, H, W) as a strided view; the residual add writes a contiguous result.
        return x + out.transpose(1, 2).view(b, c, h, w)


class CrossAttentionBlock(nn.Module):
    """Attention from the spatial tokens of x to a context sequence (e.g. a caption's token features).

    GroupNorm on x; queries from x, keys and values from the context; ``scaled_dot_product_attention``
    with the context's padding masked out; zero-initialised output projection, residual.

    Args:
        ch: channels of x (divisible by num_heads).
        context_dim: width of the context features.
        num_heads: attention heads.
        groups: maximum GroupNorm group count.
    """

    def __init__(self, ch: int, context_dim: int, num_heads: int = 1, groups: int = 32):
        super().__init__()
        if num_heads < 1 or ch % num_heads != 0:
            raise ValueError(f"CrossAttentionBlock: channels {ch} not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.norm = group_norm(ch, groups)
        self.q = nn.Linear(ch, ch)
        self.kv = nn.Linear(context_dim, 2 * ch)
        self.proj = zero_module(nn.Linear(ch, ch))

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, C, H, W); context: (B, L, D); mask: (B, L) bool, True where a token may be attended
        (every row needs one). Returns (B, C, H, W)."""
        b, c, h, w = x.shape
        heads, dim = self.num_heads, c // self.num_heads
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        q = self.q(tokens).view(b, h * w, heads, dim).transpose(1, 2)  # (B, heads, HW, dim)
        k, v = self.kv(context).view(b, context.shape[1], 2, heads, dim).permute(2, 0, 3, 1, 4).unbind(0)
        attn_mask = None if mask is None else mask[:, None, None, :]  # (B, 1, 1, L)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, heads, HW, dim)
        out = self.proj(out.transpose(1, 2).reshape(b, h * w, c))  # (B, HW, C)
        return x + out.transpose(1, 2).view(b, c, h, w)


class Downsample(nn.Module):
    """Halve H and W with a stride-2 3x3 convolution.

    Args:
        ch: channels in and out.
    """

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor, *unused) -> torch.Tensor:
        """x: (B, C, H, W) -> (B, C, ceil(H/2), ceil(W/2))."""
        return self.conv(x)


class Upsample(nn.Module):
    """Double H and W with nearest-neighbour upsampling followed by a 3x3 convolution.

    Args:
        ch: channels in and out.
    """

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor, *unused) -> torch.Tensor:
        """x: (B, C, H, W) -> (B, C, 2H, 2W)."""
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class EmbedSequential(nn.Sequential):
    """A sequence of layers where residual blocks also receive the embedding and cross-attention
    blocks the context (features (B, L, D) and their mask (B, L))."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None,
                context: tuple[torch.Tensor, torch.Tensor | None] | None = None) -> torch.Tensor:
        """Run the layers in order; x: (B, C, H, W)."""
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, CrossAttentionBlock):
                if context is None:
                    raise ValueError("a cross-attention block needs a context, got None")
                x = layer(x, *context)
            else:
                x = layer(x)
        return x
