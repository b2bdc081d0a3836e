"""Denoising Diffusion GAN networks (Xiao, Kreis and Vahdat, ICLR 2022).

The generator is the paper's NCSN++ network with adaptive GroupNorm: BigGAN residual blocks with
FIR resampling, an input pyramid added at every resolution ("progressive input, residual"),
attention at chosen levels, a positional time embedding, and a latent z mapped by an MLP into the
style vector that modulates every norm. The discriminator sees the pair (x_t, x_{t+1}) and the step t
(a time embedding added in every down block) and ends with a minibatch standard deviation.

Layer by layer these follow the published networks (`score_sde/models/ncsnpp_generator_adagn.py`
and `discriminator.py` of NVlabs/denoising-diffusion-gan), including their initialisation; the
parameter counts of the paper's presets are pinned in the tests.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from distdiff.models.config import records_config
from distdiff.nn import PixelNorm, TimestepMLP
from distdiff.nn.init import DENSE_FAN_MODE, conv1x1, conv3x3, dense, scaled_
from distdiff.nn.ncsnpp import SKIP_SCALE, BigGANResBlock, SelfAttention, ncsnpp_groups
from distdiff.nn.resample import FIRDownsampleConv, FIRResample, HalvingLevels

OUTPUT_ACTIVATIONS = ("tanh", "none")


def _largest_divisor_at_most(n: int, limit: int) -> int:
    for d in range(max(1, min(n, limit)), 0, -1):
        if n % d == 0:
            return d
    return 1


def mapping_network(nz: int, z_emb_dim: int, n_mlp: int) -> nn.Sequential:
    """z -> style: PixelNorm, Linear(nz, z_emb_dim), SiLU, then n_mlp x (Linear, SiLU)."""
    layers: list[nn.Module] = [PixelNorm(), dense(nz, z_emb_dim, mode=DENSE_FAN_MODE), nn.SiLU()]
    for _ in range(n_mlp):
        layers += [dense(z_emb_dim, z_emb_dim, mode=DENSE_FAN_MODE), nn.SiLU()]
    return nn.Sequential(*layers)


def _time_mlp(nf: int) -> TimestepMLP:
    """Positional features of width nf -> Linear(nf, 4 nf), SiLU, Linear(4 nf, 4 nf)."""
    mlp = TimestepMLP(nf, 4 * nf, features="positional")
    scaled_(mlp.linear1)
    scaled_(mlp.linear2)
    return mlp


class DDGANGenerator(HalvingLevels, nn.Module):
    """NCSN++ generator G(x_{t+1}, t, z) -> x0 prediction.

    Args:
        in_channels: channels of x_{t+1} (and of the output).
        nf: base width (the official `num_channels_dae`).
        channel_mult: width multipliers per level (level 0 = full resolution; `ch_mult`).
        num_res_blocks: residual blocks per level on the down path (one more on the up path).
        attention_levels: levels with self-attention (CIFAR-10's 16x16 of 32x32 is level 1).
        dropout: dropout in the residual blocks.
        nz: size of the latent z.
        z_emb_dim: width of the mapped z (the style vector).
        n_mlp: hidden layers of the mapping network after its input layer.
        output_activation: "tanh" (pixels in [-1, 1]) or "none" (latent space).
    """

    @records_config("ddgan_generator")
    def __init__(
        self,
        in_channels: int = 3,
        nf: int = 128,
        channel_mult: Sequence[int] = (1, 2, 2, 2),
        num_res_blocks: int = 2,
        attention_levels: Sequence[int] = (1,),
        dropout: float = 0.0,
        nz: int = 100,
        z_emb_dim: int = 256,
        n_mlp: int = 4,
        output_activation: str = "tanh",
    ):
        super().__init__()
        if output_activation not in OUTPUT_ACTIVATIONS:
            raise ValueError(
                f"unknown output_activation {output_activation!r}; valid: {', '.join(OUTPUT_ACTIVATIONS)}")
        channel_mult, attention_levels = tuple(channel_mult), set(attention_levels)
        bad = sorted(level for level in attention_levels if not 0 <= level < len(channel_mult))
        if bad:
            raise ValueError(f"attention_levels {bad} outside channel_mult levels 0..{len(channel_mult) - 1}")
        self.in_channels = self.out_channels = in_channels
        self.channel_mult, self.nz, self.output_activation = channel_mult, nz, output_activation
        temb_dim = 4 * nf
        self.time_embed = _time_mlp(nf)
        self.z_mapping = mapping_network(nz, z_emb_dim, n_mlp)

        def block(cin: int, cout: int, resample: str | None = None) -> BigGANResBlock:
            return BigGANResBlock(cin, cout, temb_dim, z_emb_dim, resample, dropout)

        self.conv_in = conv3x3(in_channels, nf)
        ch, skips, pyramid_ch = nf, [nf], in_channels
        self.down = nn.ModuleList()
        for level, mult in enumerate(channel_mult):
            stage = nn.ModuleDict({"blocks": nn.ModuleList(), "attn": nn.ModuleList()})
            for _ in range(num_res_blocks):
                stage["blocks"].append(block(ch, nf * mult))
                ch = nf * mult
                stage["attn"].append(SelfAttention(ch) if level in attention_levels else nn.Identity())
                skips.append(ch)
            if level != len(channel_mult) - 1:
                stage["downsample"] = block(ch, ch, "down")
                stage["pyramid"] = FIRDownsampleConv(pyramid_ch, ch)
                scaled_(stage["pyramid"].conv)
                pyramid_ch = ch
                skips.append(ch)
            self.down.append(stage)
        self.mid = nn.ModuleList([block(ch, ch), SelfAttention(ch), block(ch, ch)])
        self.up = nn.ModuleList()
        for level in reversed(range(len(channel_mult))):
            stage = nn.ModuleDict({"blocks": nn.ModuleList()})
            for _ in range(num_res_blocks + 1):
                stage["blocks"].append(block(ch + skips.pop(), nf * channel_mult[level]))
                ch = nf * channel_mult[level]
            stage["attn"] = SelfAttention(ch) if level in attention_levels else nn.Identity()
            if level != 0:
                stage["upsample"] = block(ch, ch, "up")
            self.up.append(stage)
        self.norm_out = nn.GroupNorm(ncsnpp_groups(ch), ch, eps=1e-6)
        self.conv_out = conv3x3(ch, in_channels, scale=0.0)

    def forward(self, x_tp1: torch.Tensor, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Predict x0.

        Args:
            x_tp1: the noisier sample x_{t+1}, (B, in_channels, H, W).
            t: integer steps (B,) (a 0-d tensor applies to the whole batch).
            z: latent noise (B, nz).

        Returns:
            x0 prediction (B, in_channels, H, W); in [-1, 1] when output_activation is "tanh".
        """
        if z.dim() != 2 or z.shape[1] != self.nz:
            raise ValueError(f"DDGANGenerator expects z of shape (B, {self.nz}), got {tuple(z.shape)}")
        if t.dim() == 0:
            t = t.expand(x_tp1.shape[0])
        temb, style = self.time_embed(t), self.z_mapping(z)  # (B, 4 nf), (B, z_emb_dim)
        pyramid = x_tp1
        skips = [self.conv_in(x_tp1)]
        for stage in self.down:
            for blk, attn in zip(stage["blocks"], stage["attn"]):
                skips.append(attn(blk(skips[-1], temb, style)))
            if "downsample" in stage:
                h = stage["downsample"](skips[-1], temb, style)
                pyramid = (stage["pyramid"](pyramid) + h) * SKIP_SCALE  # the input, resampled, joins each level
                skips.append(pyramid)
        h = self.mid[0](skips[-1], temb, style)
        h = self.mid[2](self.mid[1](h), temb, style)
        for stage in self.up:
            for blk in stage["blocks"]:
                h = blk(torch.cat([h, skips.pop()], dim=1), temb, style)
            h = stage["attn"](h)
            if "upsample" in stage:
                h = stage["upsample"](h, temb, style)
        out = self.conv_out(F.silu(self.norm_out(h)))
        return torch.tanh(out) if self.output_activation == "tanh" else out


class DownBlock(nn.Module):
    """Discriminator block: LeakyReLU, conv, + dense(t_emb), LeakyReLU, (FIR downsample), conv;
    1x1 skip (downsampled alike); sum / sqrt(2)."""

    def __init__(self, in_ch: int, out_ch: int, t_emb_dim: int, downsample: bool):
        super().__init__()
        self.conv1 = conv3x3(in_ch, out_ch, mode=DENSE_FAN_MODE)
        self.conv2 = conv3x3(out_ch, out_ch, scale=0.0, mode=DENSE_FAN_MODE)
        self.t_proj = dense(t_emb_dim, out_ch, mode=DENSE_FAN_MODE)
        self.skip = conv1x1(in_ch, out_ch, bias=False, mode=DENSE_FAN_MODE)
        self.downsample = FIRResample("down") if downsample else None

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        """x: (B, in_ch, H, W), t_emb: (B, t_emb_dim) -> (B, out_ch, H', W') with H' = H/2 if downsampling."""
        h = self.conv1(F.leaky_relu(x, 0.2)) + self.t_proj(t_emb)[:, :, None, None]
        h = F.leaky_relu(h, 0.2)
        if self.downsample is not None:
            h, x = self.downsample(h), self.downsample(x)
        return (self.conv2(h) + self.skip(x)) * SKIP_SCALE


def minibatch_stddev(h: torch.Tensor, group_size: int = 4) -> torch.Tensor:
    """Append one channel holding the feature standard deviation across a group of samples (StyleGAN).

    The batch is split into groups of size g = the largest divisor of B that is <= group_size;
    sample i is grouped with samples i + k * (B / g). This lets the discriminator see batch diversity.

    Args:
        h: features (B, C, H, W).
        group_size: maximum group size.

    Returns:
        (B, C + 1, H, W).
    """
    b, c, height, width = h.shape
    g = _largest_divisor_at_most(b, group_size)
    grouped = h.reshape(g, b // g, c, height, width)
    std = torch.sqrt(grouped.var(dim=0, unbiased=False) + 1e-8)  # (B/g, C, H, W)
    std = std.mean(dim=(1, 2, 3))  # (B/g,)
    std = std.reshape(1, b // g, 1, 1, 1).expand(g, b // g, 1, height, width).reshape(b, 1, height, width)
    return torch.cat([h, std.to(h.dtype)], dim=1)


class DDGANDiscriminator(HalvingLevels, nn.Module):
    """Time-conditioned discriminator D(x_t, t, x_{t+1}) -> logit.

    Args:
        in_channels: channels of one image (x_t and x_{t+1} are concatenated, so the first conv sees twice).
        nf: base width (the official `ngf`).
        channel_mult: entry 0 is the width of the 1x1 input conv; each later entry is a down block
            that halves the resolution. The paper's "small" discriminator (CIFAR-10, Stacked MNIST):
            (2, 4, 8, 8) with full_res_block=True; "large" (256x256): (2, 4, 8, 8, 8, 8, 8), full_res_block=False.
        full_res_block: a first, non-downsampling block at full resolution (small discriminator).
        t_emb_dim: width of the time embedding (the official `t_emb_dim`, 256 by default).
        stddev_group: maximum group size of the minibatch standard deviation.
    """

    @records_config("ddgan_discriminator")
    def __init__(
        self,
        in_channels: int = 3,
        nf: int = 64,
        channel_mult: Sequence[int] = (2, 4, 8, 8),
        full_res_block: bool = True,
        t_emb_dim: int = 256,
        stddev_group: int = 4,
    ):
        super().__init__()
        channel_mult = tuple(channel_mult)
        self.channel_mult = channel_mult
        self.stddev_group = stddev_group
        self.time_embed = TimestepMLP(t_emb_dim, t_emb_dim, act=nn.LeakyReLU(0.2), features="positional")
        scaled_(self.time_embed.linear1, mode=DENSE_FAN_MODE)
        scaled_(self.time_embed.linear2, mode=DENSE_FAN_MODE)
        widths = [nf * m for m in channel_mult]
        self.conv_in = conv1x1(2 * in_channels, widths[0], mode=DENSE_FAN_MODE)
        blocks = [DownBlock(widths[0], widths[0], t_emb_dim, downsample=False)] if full_res_block else []
        blocks += [DownBlock(widths[i - 1], widths[i], t_emb_dim, downsample=True) for i in range(1, len(widths))]
        self.blocks = nn.ModuleList(blocks)
        # The small network starts its last conv at ~0, the large one at the usual scale (as published).
        self.conv_out = conv3x3(widths[-1] + 1, widths[-1], scale=0.0 if full_res_block else 1.0,
                                mode=DENSE_FAN_MODE)
        self.linear_out = dense(widths[-1], 1, mode=DENSE_FAN_MODE)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, x_tp1: torch.Tensor) -> torch.Tensor:
        """Score the pair (x_t, x_{t+1}) at step t.

        Args:
            x_t: real or generated less-noisy sample (B, in_channels, H, W).
            t: integer steps (B,) (a 0-d tensor applies to the whole batch).
            x_tp1: the noisier sample it came from (B, in_channels, H, W).

        Returns:
            logits (B,).
        """
        if t.dim() == 0:
            t = t.expand(x_t.shape[0])
        t_emb = F.leaky_relu(self.time_embed(t), 0.2)  # (B, t_emb_dim)
        h = self.conv_in(torch.cat([x_t, x_tp1], dim=1))
        for block in self.blocks:
            h = block(h, t_emb)
        h = minibatch_stddev(h, self.stddev_group)  # (B, C + 1, h, w)
        h = F.leaky_relu(self.conv_out(h), 0.2)
        return self.linear_out(h.sum(dim=(2, 3))).squeeze(1)  # (B,)
