"""The DDPM U-Net (Ho et al. 2020): a trunk of residual and attention blocks, and its embeddings."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from distdiff.models.config import records_config
from distdiff.nn import AttentionBlock, Downsample, EmbedSequential, ResBlock, TimestepMLP, Upsample
from distdiff.nn import group_norm, zero_module
from distdiff.nn.resample import HalvingLevels


class UNetTrunk(nn.Module):
    """Down path with skips, middle (res, attn, res), up path with num_res_blocks+1 blocks per level.

    The (timestep + label) embedding is computed by the caller and passed in.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        model_channels: base width; level i has model_channels * channel_mult[i] channels.
        channel_mult: width multiplier per resolution level (level 0 = full resolution).
        num_res_blocks: residual blocks per level on the down path (one more on the up path).
        attention_levels: levels that get a self-attention block after each residual block.
        dropout: dropout inside residual blocks.
        num_heads: attention heads.
        emb_dim: width of the embedding added in every residual block.
        head_channels: when set, each attention block has width / head_channels heads instead (LDM's
            `num_head_channels`).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        model_channels: int,
        channel_mult: Sequence[int],
        num_res_blocks: int,
        attention_levels: Sequence[int],
        dropout: float,
        num_heads: int,
        emb_dim: int,
        head_channels: int | None = None,
    ):
        super().__init__()
        channel_mult = tuple(channel_mult)
        attention_levels = set(attention_levels)
        bad_levels = sorted(level for level in attention_levels if not 0 <= level < len(channel_mult))
        if bad_levels:
            raise ValueError(f"attention_levels {bad_levels} outside channel_mult levels 0..{len(channel_mult) - 1}")

        def res_block(cin: int, cout: int) -> ResBlock:
            return ResBlock(cin, cout, emb_dim, dropout)

        def attention(ch: int) -> AttentionBlock:
            return AttentionBlock(ch, ch // head_channels if head_channels else num_heads)

        self.conv_in = nn.Conv2d(in_channels, model_channels, 3, padding=1)
        ch = model_channels
        skip_channels = [ch]
        self.down = nn.ModuleList()
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = [res_block(ch, model_channels * mult)]
                ch = model_channels * mult
                if level in attention_levels:
                    layers.append(attention(ch))
                self.down.append(EmbedSequential(*layers))
                skip_channels.append(ch)
            if level != len(channel_mult) - 1:
                self.down.append(EmbedSequential(Downsample(ch)))
                skip_channels.append(ch)

        self.mid = EmbedSequential(res_block(ch, ch), attention(ch), res_block(ch, ch))

        self.up = nn.ModuleList()
        for level in reversed(range(len(channel_mult))):
            for i in range(num_res_blocks + 1):
                layers = [res_block(ch + skip_channels.pop(), model_channels * channel_mult[level])]
                ch = model_channels * channel_mult[level]
                if level in attention_levels:
                    layers.append(attention(ch))
                if level != 0 and i == num_res_blocks:
                    layers.append(Upsample(ch))
                self.up.append(EmbedSequential(*layers))

        self.norm_out = group_norm(ch)
        self.conv_out = zero_module(nn.Conv2d(ch, out_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """x: (B, in_channels, H, W); emb: (B, emb_dim).

        Returns (B, out_channels, H, W). H and W must be divisible by 2**(len(channel_mult)-1).
        """
        h = self.conv_in(x)
        skips = [h]
        for block in self.down:
            h = block(h, emb)
            skips.append(h)
        h = self.mid(h, emb)
        for block in self.up:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.conv_out(F.silu(self.norm_out(h)))


class UNet(HalvingLevels, nn.Module):
    """DDPM noise-prediction U-Net with optional class conditioning for classifier-free guidance.

    Args:
        in_channels: image (or latent) channels.
        out_channels: output channels; None means in_channels.
        model_channels: base width (128 in DDPM).
        channel_mult: width multipliers per level; level 0 is the full input resolution.
        num_res_blocks: residual blocks per level on the down path.
        attention_levels: indices into channel_mult of levels with self-attention.
        dropout: dropout probability in residual blocks.
        num_heads: attention heads.
        head_channels: channels per attention head (overrides num_heads; LDM's `num_head_channels`).
        num_classes: number of classes; the label table has one extra "null" row (index
            num_classes) used when ``y`` is None, for classifier-free guidance.
    """

    @records_config("unet")
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int | None = None,
        model_channels: int = 128,
        channel_mult: Sequence[int] = (1, 2, 2, 2),
        num_res_blocks: int = 2,
        attention_levels: Sequence[int] = (1,),
        dropout: float = 0.1,
        num_heads: int = 1,
        num_classes: int | None = None,
        head_channels: int | None = None,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels if out_channels is not None else in_channels
        self.channel_mult = tuple(channel_mult)
        self.num_classes = num_classes
        emb_dim = 4 * model_channels
        self.time_embed = TimestepMLP(model_channels, emb_dim)
        self.label_embed = nn.Embedding(num_classes + 1, emb_dim) if num_classes is not None else None
        self.trunk = UNetTrunk(
            in_channels, self.out_channels, model_channels, channel_mult, num_res_blocks,
            attention_levels, dropout, num_heads, emb_dim, head_channels,
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Predict the noise.

        Args:
            x: noisy input x_t, (B, in_channels, H, W).
            t: timesteps (B,) int64 or float (a 0-d tensor applies to the whole batch).
            y: class labels (B,) int64 in [0, num_classes] (num_classes = null label); None means
                null label for every sample. Ignored shape-wise when num_classes is None (must be None).

        Returns:
            eps prediction (B, out_channels, H, W).
        """
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        emb = self.time_embed(t)  # (B, 4 * model_channels)
        if self.label_embed is not None:
            if y is None:
                y = torch.full((x.shape[0],), self.num_classes, dtype=torch.long, device=x.device)
            emb = emb + self.label_embed(y)
        elif y is not None:
            raise ValueError("UNet built without num_classes got class labels y")
        return self.trunk(x, emb)
