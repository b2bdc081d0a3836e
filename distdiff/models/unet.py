"""The DDPM U-Net (Ho et al. 2020): a trunk of residual and attention blocks, and its embeddings."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from distdiff.models.config import records_config
from distdiff.models.text_encoder import TextEncoder, pooled
from distdiff.nn import AttentionBlock, CrossAttentionBlock, Downsample, EmbedSequential, ResBlock, TimestepMLP
from distdiff.nn import Upsample, group_norm, zero_module
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
        cross_attention_levels: levels whose blocks (and, when any, the middle) attend to a context
            after their self-attention (Stable Diffusion's spatial transformer, reduced to the attention).
        context_dim: width of the context features (needed with cross_attention_levels).
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
        cross_attention_levels: Sequence[int] = (),
        context_dim: int | None = None,
    ):
        super().__init__()
        channel_mult = tuple(channel_mult)
        attention_levels, cross_levels = set(attention_levels), set(cross_attention_levels)
        for name, levels in (("attention_levels", attention_levels), ("cross_attention_levels", cross_levels)):
            bad_levels = sorted(level for level in levels if not 0 <= level < len(channel_mult))
            if bad_levels:
                raise ValueError(f"{name} {bad_levels} outside channel_mult levels 0..{len(channel_mult) - 1}")
        if cross_levels and not context_dim:
            raise ValueError("cross_attention_levels need a context_dim (a text encoder)")

        def res_block(cin: int, cout: int) -> ResBlock:
            return ResBlock(cin, cout, emb_dim, dropout)

        def attention(ch: int) -> AttentionBlock:
            return AttentionBlock(ch, ch // head_channels if head_channels else num_heads)

        def attend(level: int | None, ch: int) -> list[nn.Module]:
            """The attention layers after a residual block of `level` (None: the middle)."""
            layers = [attention(ch)] if level is None or level in attention_levels else []
            if (level is None and cross_levels) or level in cross_levels:
                layers.append(CrossAttentionBlock(ch, context_dim, ch // head_channels if head_channels else num_heads))
            return layers

        self.conv_in = nn.Conv2d(in_channels, model_channels, 3, padding=1)
        ch = model_channels
        skip_channels = [ch]
        self.down = nn.ModuleList()
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = [res_block(ch, model_channels * mult)]
                ch = model_channels * mult
                layers += attend(level, ch)
                self.down.append(EmbedSequential(*layers))
                skip_channels.append(ch)
            if level != len(channel_mult) - 1:
                self.down.append(EmbedSequential(Downsample(ch)))
                skip_channels.append(ch)

        self.mid = EmbedSequential(res_block(ch, ch), *attend(None, ch), res_block(ch, ch))

        self.up = nn.ModuleList()
        for level in reversed(range(len(channel_mult))):
            for i in range(num_res_blocks + 1):
                layers = [res_block(ch + skip_channels.pop(), model_channels * channel_mult[level])]
                ch = model_channels * channel_mult[level]
                layers += attend(level, ch)
                if level != 0 and i == num_res_blocks:
                    layers.append(Upsample(ch))
                self.up.append(EmbedSequential(*layers))

        self.norm_out = group_norm(ch)
        self.conv_out = zero_module(nn.Conv2d(ch, out_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor,
                context: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """x: (B, in_channels, H, W); emb: (B, emb_dim); context: (features (B, L, D), mask (B, L)) for
        cross-attention.

        Returns (B, out_channels, H, W). H and W must be divisible by 2**(len(channel_mult)-1).
        """
        h = self.conv_in(x)
        skips = [h]
        for block in self.down:
            h = block(h, emb, context)
            skips.append(h)
        h = self.mid(h, emb, context)
        for block in self.up:
            h = block(torch.cat([h, skips.pop()], dim=1), emb, context)
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
        text_encoder: keyword arguments of a `TextEncoder` (vocab_size, max_length, width, layers,
            heads) to condition on captions: its features feed the cross-attention blocks, and their
            mean over the real tokens is added to the timestep embedding. None: no text.
        cross_attention_levels: levels with cross-attention to the caption (with text_encoder).
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
        text_encoder: dict | None = None,
        cross_attention_levels: Sequence[int] = (),
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels if out_channels is not None else in_channels
        self.channel_mult = tuple(channel_mult)
        self.num_classes = num_classes
        emb_dim = 4 * model_channels
        self.time_embed = TimestepMLP(model_channels, emb_dim)
        self.label_embed = nn.Embedding(num_classes + 1, emb_dim) if num_classes is not None else None
        self.text = TextEncoder(**text_encoder) if text_encoder is not None else None
        self.text_embed = nn.Linear(self.text.token.embedding_dim, emb_dim) if self.text is not None else None
        if cross_attention_levels and self.text is None:
            raise ValueError("cross_attention_levels need a text_encoder")
        self.trunk = UNetTrunk(
            in_channels, self.out_channels, model_channels, channel_mult, num_res_blocks,
            attention_levels, dropout, num_heads, emb_dim, head_channels, cross_attention_levels,
            self.text.token.embedding_dim if self.text is not None else None,
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None,
                text: torch.Tensor | None = None) -> torch.Tensor:
        """Predict the noise.

        Args:
            x: noisy input x_t, (B, in_channels, H, W).
            t: timesteps (B,) int64 or float (a 0-d tensor applies to the whole batch).
            y: class labels (B,) int64 in [0, num_classes] (num_classes = null label); None means
                null label for every sample. Ignored shape-wise when num_classes is None (must be None).
            text: caption token ids (B, L) int64 of a text-conditioned U-Net (the empty caption's ids
                are its null condition); required by one, refused by others.

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
        context = None
        if self.text is not None:
            if text is None:
                raise ValueError("a text-conditioned UNet needs caption tokens (text=)")
            context = self.text(text)  # features (B, L, D), mask (B, L)
            emb = emb + self.text_embed(pooled(*context))
        elif text is not None:
            raise ValueError("UNet built without a text_encoder got caption tokens")
        return self.trunk(x, emb, context)
