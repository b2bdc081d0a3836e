"""Denoising Diffusion GAN networks (Xiao et al., ICLR 2022): generator and time-conditioned discriminator."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from distdiff.models.config import records_config
from distdiff.models.unet import UNetTrunk
from distdiff.nn import PixelNorm, TimestepMLP, zero_module

OUTPUT_ACTIVATIONS = ("tanh", "none")


def _largest_divisor_at_most(n: int, limit: int) -> int:
    for d in range(max(1, min(n, limit)), 0, -1):
        if n % d == 0:
            return d
    return 1


def mapping_network(nz: int, z_emb_dim: int, n_mlp: int) -> nn.Sequential:
    """StyleGAN-like mapping z -> z_emb: PixelNorm, Linear(nz, z_emb_dim), SiLU, then n_mlp x (Linear, SiLU).

    The input projection plus n_mlp hidden layers follows the DDGAN reference networks.
    """
    layers: list[nn.Module] = [PixelNorm(), nn.Linear(nz, z_emb_dim), nn.SiLU()]
    for _ in range(n_mlp):
        layers += [nn.Linear(z_emb_dim, z_emb_dim), nn.SiLU()]
    return nn.Sequential(*layers)


class DDGANGenerator(nn.Module):
    """U-Net generator predicting x0 from x_{t+1}, the step t and a latent noise z.

    Residual blocks use AdaptiveGroupNorm conditioned on the mapped z and add a timestep embedding.

    Args:
        in_channels: channels of x_{t+1}.
        out_channels: channels of the x0 prediction; None means in_channels.
        nf: base width.
        channel_mult: width multipliers per level (level 0 = full resolution).
        num_res_blocks: residual blocks per level on the down path.
        attention_levels: levels with self-attention.
        dropout: dropout in residual blocks.
        nz: size of the latent noise z.
        z_emb_dim: width of the mapped z (the style vector).
        n_mlp: hidden layers of the mapping network.
        t_emb_dim: width of the timestep embedding; None means 4 * nf.
        output_activation: "tanh" (pixel space, outputs in [-1, 1]) or "none" (latent space).
    """

    @records_config("ddgan_generator")
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int | None = None,
        nf: int = 128,
        channel_mult: Sequence[int] = (1, 2, 2, 2),
        num_res_blocks: int = 2,
        attention_levels: Sequence[int] = (1,),
        dropout: float = 0.0,
        nz: int = 100,
        z_emb_dim: int = 256,
        n_mlp: int = 4,
        t_emb_dim: int | None = None,
        output_activation: str = "tanh",
    ):
        super().__init__()
        if output_activation not in OUTPUT_ACTIVATIONS:
            raise ValueError(
                f"unknown output_activation {output_activation!r}; valid: {', '.join(OUTPUT_ACTIVATIONS)}"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels if out_channels is not None else in_channels
        self.channel_mult = tuple(channel_mult)
        self.nz = nz
        self.t_emb_dim = t_emb_dim if t_emb_dim is not None else 4 * nf
        self.output_activation = output_activation
        self.time_embed = TimestepMLP(nf, self.t_emb_dim)
        self.z_mapping = mapping_network(nz, z_emb_dim, n_mlp)
        self.trunk = UNetTrunk(
            in_channels, self.out_channels, nf, channel_mult, num_res_blocks, attention_levels, dropout,
            num_heads=1, emb_dim=self.t_emb_dim, style_dim=z_emb_dim, skip_rescale=True,
        )

    @property
    def total_downsampling(self) -> int:
        """H and W must be divisible by this factor."""
        return 2 ** (len(self.channel_mult) - 1)

    def forward(self, x_tp1: torch.Tensor, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Predict x0.

        Args:
            x_tp1: the noisier sample x_{t+1}, (B, in_channels, H, W).
            t: integer steps (B,) (a 0-d tensor applies to the whole batch).
            z: latent noise (B, nz).

        Returns:
            x0 prediction (B, out_channels, H, W); in [-1, 1] when output_activation is "tanh".
        """
        if z.dim() != 2 or z.shape[1] != self.nz:
            raise ValueError(f"DDGANGenerator expects z of shape (B, {self.nz}), got {tuple(z.shape)}")
        if t.dim() == 0:
            t = t.expand(x_tp1.shape[0])
        emb = self.time_embed(t)  # (B, t_emb_dim)
        style = self.z_mapping(z)  # (B, z_emb_dim)
        out = self.trunk(x_tp1, emb, style)
        return torch.tanh(out) if self.output_activation == "tanh" else out


class DownBlock(nn.Module):
    """Discriminator block: LeakyReLU, conv, + dense(t_emb), LeakyReLU, (avg-pool), conv; 1x1 skip; /sqrt(2)."""

    def __init__(self, in_ch: int, out_ch: int, t_emb_dim: int, downsample: bool):
        super().__init__()
        self.downsample = downsample
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.t_proj = nn.Linear(t_emb_dim, out_ch)
        self.conv2 = zero_module(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1, bias=False)

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        """x: (B, in_ch, H, W), t_emb: (B, t_emb_dim) -> (B, out_ch, H', W') with H' = H/2 if downsampling."""
        h = self.conv1(F.leaky_relu(x, 0.2)) + self.t_proj(t_emb)[:, :, None, None]
        h = F.leaky_relu(h, 0.2)
        if self.downsample:
            h, x = F.avg_pool2d(h, 2), F.avg_pool2d(x, 2)
        return (self.conv2(h) + self.skip(x)) * (1.0 / math.sqrt(2.0))


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


class DDGANDiscriminator(nn.Module):
    """Time-conditioned discriminator D(x_t, t, x_{t+1}) -> logit.

    Args:
        in_channels: channels of one image (x_t and x_{t+1} are concatenated, so the first conv sees twice).
        nf: base width.
        channel_mult: width multipliers per level; entry 0 is the full-resolution width (the 1x1 input
            conv), each later entry is a down block that halves the resolution. "Small" (32x32):
            (2, 4, 8, 8) with full_res_block=True; "large" (256x256): (2, 4, 8, 8, 8, 8, 8), full_res_block=False.
        full_res_block: add a non-downsampling block at full resolution.
        t_emb_dim: width of the timestep embedding.
        stddev_group: maximum group size of the minibatch standard deviation.
    """

    @records_config("ddgan_discriminator")
    def __init__(
        self,
        in_channels: int = 3,
        nf: int = 64,
        channel_mult: Sequence[int] = (2, 4, 8, 8),
        full_res_block: bool = True,
        t_emb_dim: int = 128,
        stddev_group: int = 4,
    ):
        super().__init__()
        channel_mult = tuple(channel_mult)
        self.channel_mult = channel_mult
        self.stddev_group = stddev_group
        self.time_embed = TimestepMLP(t_emb_dim, t_emb_dim, act=nn.LeakyReLU(0.2))
        widths = [nf * m for m in channel_mult]
        self.conv_in = nn.Conv2d(2 * in_channels, widths[0], 1)
        blocks = [DownBlock(widths[0], widths[0], t_emb_dim, downsample=False)] if full_res_block else []
        blocks += [DownBlock(widths[i - 1], widths[i], t_emb_dim, downsample=True) for i in range(1, len(widths))]
        self.blocks = nn.ModuleList(blocks)
        self.conv_out = nn.Conv2d(widths[-1] + 1, widths[-1], 3, padding=1)
        self.linear_out = nn.Linear(widths[-1], 1)

    @property
    def total_downsampling(self) -> int:
        """H and W must be divisible by this factor."""
        return 2 ** (len(self.channel_mult) - 1)

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
