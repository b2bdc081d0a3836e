"""KL-regularised convolutional autoencoder (the latent-diffusion "KL-VAE")."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from distdiff.models.config import records_config
from distdiff.nn import AttentionBlock, Downsample, ResBlock, Upsample, group_norm
from distdiff.nn.resample import HalvingLevels

LIKELIHOODS = ("gaussian", "bernoulli")
LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0


def _middle(ch: int, dropout: float, attn: bool) -> nn.Sequential:
    """Middle of encoder/decoder: res, (attention), res at the lowest resolution."""
    layers = [ResBlock(ch, ch, None, dropout)]
    if attn:
        layers.append(AttentionBlock(ch))
    layers.append(ResBlock(ch, ch, None, dropout))
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """Image (B, in_channels, H, W) -> features (B, out_channels, H/f, W/f)."""

    def __init__(self, in_channels, out_channels, base_channels, channel_mult, num_res_blocks, attn_mid, dropout):
        super().__init__()
        layers = [nn.Conv2d(in_channels, base_channels, 3, padding=1)]
        ch = base_channels
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers.append(ResBlock(ch, base_channels * mult, None, dropout))
                ch = base_channels * mult
            if level != len(channel_mult) - 1:
                layers.append(Downsample(ch))
        layers += [_middle(ch, dropout, attn_mid), group_norm(ch), nn.SiLU(), nn.Conv2d(ch, out_channels, 3, padding=1)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Decoder(nn.Module):
    """Latent (B, in_channels, h, w) -> image-space output (B, out_channels, h*f, w*f)."""

    def __init__(self, in_channels, out_channels, base_channels, channel_mult, num_res_blocks, attn_mid, dropout):
        super().__init__()
        ch = base_channels * channel_mult[-1]
        layers = [nn.Conv2d(in_channels, ch, 3, padding=1), _middle(ch, dropout, attn_mid)]
        for level in reversed(range(len(channel_mult))):
            for _ in range(num_res_blocks + 1):
                layers.append(ResBlock(ch, base_channels * channel_mult[level], None, dropout))
                ch = base_channels * channel_mult[level]
            if level != 0:
                layers.append(Upsample(ch))
        layers += [group_norm(ch), nn.SiLU(), nn.Conv2d(ch, out_channels, 3, padding=1)]
        self.layers = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(z)


class KLVAE(HalvingLevels, nn.Module):
    """Variational autoencoder with a diagonal-Gaussian posterior over a spatial latent.

    Args:
        in_channels: image channels.
        latent_channels: latent channels.
        base_channels: width at full resolution.
        channel_mult: width multipliers per level; the downsampling factor is 2**(len-1).
        num_res_blocks: residual blocks per level in the encoder (decoder: one more).
        attn_mid: self-attention in the middle of encoder and decoder.
        dropout: dropout in residual blocks.
        likelihood: "gaussian" (``decode_raw`` is the image in [-1, 1] units) or "bernoulli"
            (``decode_raw`` gives logits of pixel intensities in [0, 1]).
    """

    @records_config("vae")
    def __init__(
        self,
        in_channels: int = 3,
        latent_channels: int = 4,
        base_channels: int = 64,
        channel_mult: Sequence[int] = (1, 2, 4),
        num_res_blocks: int = 1,
        attn_mid: bool = True,
        dropout: float = 0.0,
        likelihood: str = "gaussian",
    ):
        super().__init__()
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {likelihood!r}; valid: {', '.join(LIKELIHOODS)}")
        channel_mult = tuple(channel_mult)
        self.in_channels = in_channels
        self.latent_channels = latent_channels
        self.channel_mult = channel_mult
        self.likelihood = likelihood
        args = (base_channels, channel_mult, num_res_blocks, attn_mid, dropout)
        self.encoder = Encoder(in_channels, 2 * latent_channels, *args)
        self.decoder = Decoder(latent_channels, in_channels, *args)
        # 1 / std of the latents, measured after training; latent diffusion works on z * scale_factor.
        self.register_buffer("scale_factor", torch.tensor(1.0, dtype=torch.float32), persistent=True)

    @property
    def downsample_factor(self) -> int:
        """Spatial downsampling factor f between image and latent."""
        return self.total_downsampling

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior parameters of x (B, in_channels, H, W) in [-1, 1].

        Returns:
            (mean, logvar), each (B, latent_channels, H/f, W/f); logvar clamped to [-30, 20].
        """
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return mean, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)

    @staticmethod
    def sample_latent(
        mean: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Reparameterised sample z = mean + exp(logvar / 2) * eps, eps ~ N(0, I).

        Args:
            mean, logvar: posterior parameters (B, latent_channels, h, w).
            generator: optional torch.Generator (on mean's device) for reproducible noise.

        Returns:
            z of mean's shape.
        """
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + torch.exp(0.5 * logvar) * eps

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder output (B, in_channels, H, W): image in [-1, 1] units (gaussian) or logits (bernoulli)."""
        return self.decoder(z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Image (B, in_channels, H, W) in [-1, 1] units from an (unscaled) latent z."""
        raw = self.decode_raw(z)
        if self.likelihood == "bernoulli":
            return 2.0 * torch.sigmoid(raw) - 1.0
        return raw

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode, sample and decode x (B, in_channels, H, W).

        Returns:
            (raw_out, mean, logvar): ``decode_raw`` of a posterior sample and the posterior parameters.
        """
        mean, logvar = self.encode(x)
        z = self.sample_latent(mean, logvar, generator)
        return self.decode_raw(z), mean, logvar
