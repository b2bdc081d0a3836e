"""Model families of distdiff: KL-VAE, DDPM U-Net, DDGAN generator/discriminator, segmentation U-Net
(torch only)."""

from distdiff.models.ddgan import DDGANDiscriminator, DDGANGenerator, minibatch_stddev
from distdiff.models.export import load_weights, save_weights
from distdiff.models.seg_unet import SegUNet
from distdiff.models.registry import (
    FAMILIES,
    build_model,
    ddgan_num_timesteps,
    model_from_config,
    preset_downsampling,
    preset_kwargs,
    preset_names,
)
from distdiff.models.unet import UNet, UNetTrunk
from distdiff.models.vae import KLVAE

__all__ = [
    "FAMILIES",
    "KLVAE",
    "SegUNet",
    "DDGANDiscriminator",
    "DDGANGenerator",
    "UNet",
    "UNetTrunk",
    "build_model",
    "ddgan_num_timesteps",
    "load_weights",
    "minibatch_stddev",
    "model_from_config",
    "preset_downsampling",
    "preset_kwargs",
    "preset_names",
    "save_weights",
]
