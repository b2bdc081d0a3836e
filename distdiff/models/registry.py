"""Closed registries of named model presets (plain dicts of constructor keyword arguments)."""

from __future__ import annotations

import copy
import inspect
from typing import Any

from torch import nn

from distdiff.models.ddgan import DDGANDiscriminator, DDGANGenerator
from distdiff.models.seg_unet import SegUNet
from distdiff.models.unet import UNet
from distdiff.models.vae import KLVAE

FAMILIES = ("vae", "unet", "ddgan_generator", "ddgan_discriminator", "seg_unet")

_CLASSES: dict[str, type[nn.Module]] = {
    "vae": KLVAE,
    "unet": UNet,
    "ddgan_generator": DDGANGenerator,
    "ddgan_discriminator": DDGANDiscriminator,
    "seg_unet": SegUNet,
}

VAE_PRESETS: dict[str, dict[str, Any]] = {
    # Unit tests: f=2.
    "tiny": dict(in_channels=3, latent_channels=4, base_channels=16, channel_mult=(1, 2), num_res_blocks=1),
    # 32x32x1 MNIST demo, f=4 -> 8x8x4 latents; ~0.2 s per batch-64 step on a 2-core CPU. The likelihood
    # is left at the constructor default ("gaussian"); a run config picks it with a likelihood= override.
    "mnist-f4": dict(
        in_channels=1, latent_channels=4, base_channels=16, channel_mult=(1, 2, 2), num_res_blocks=1
    ),
    # 32x32x1 MNIST, f=8 -> 4x4x4 latents: a quarter of the stage-2 cost of mnist-f4.
    "mnist-f8": dict(
        in_channels=1, latent_channels=4, base_channels=16, channel_mult=(1, 2, 2, 2), num_res_blocks=1
    ),
    # 32x32x3 Stacked MNIST, f=4 -> 8x8x4 latents, with 8 channels at full resolution: its decoder costs
    # a third of mnist-f4's, so the decode does not dominate the time of a 4-step sampler.
    "stacked-f4": dict(
        in_channels=3, latent_channels=4, base_channels=8, channel_mult=(1, 2, 2), num_res_blocks=1
    ),
    # Stable-Diffusion-like autoencoders.
    "kl-f4": dict(in_channels=3, latent_channels=4, base_channels=128, channel_mult=(1, 2, 4), num_res_blocks=2),
    "kl-f8": dict(in_channels=3, latent_channels=4, base_channels=128, channel_mult=(1, 2, 4, 4), num_res_blocks=2),
}

UNET_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        in_channels=3, model_channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_levels=(1,), dropout=0.0
    ),
    # MNIST latent demo on 4x4x4 (mnist-f8) or 8x8x4 (mnist-f4) latents: trains in minutes on 2 CPU cores.
    "small": dict(
        in_channels=4, model_channels=48, channel_mult=(1, 2), num_res_blocks=2, attention_levels=(1,),
        dropout=0.0,
    ),
    # The trilemma study's U-Net on 8x8x4 latents: 1.27 M parameters, the size of the DDGAN generator
    # (1.26 M), so that the speed comparison is between networks of one size.
    "trilemma": dict(
        in_channels=4, model_channels=36, channel_mult=(1, 2), num_res_blocks=2, attention_levels=(1,),
        dropout=0.0,
    ),
    # Ho et al. 2020, CIFAR-10: 35.7 M parameters, attention at 16x16.
    "ddpm-cifar10": dict(
        in_channels=3, model_channels=128, channel_mult=(1, 2, 2, 2), num_res_blocks=2, attention_levels=(1,),
        dropout=0.1, num_heads=1,
    ),
    # The LDM paper's CelebA-HQ 256 U-Net (its celebahq-ldm-vq-4 config) on 64x64 latents of an f=4
    # autoencoder: width 224, multipliers 1, 2, 3, 4, attention at 32, 16 and 8 with 32-channel heads.
    "ldm-celebahq256": dict(
        in_channels=4, model_channels=224, channel_mult=(1, 2, 3, 4), num_res_blocks=2, attention_levels=(1, 2, 3),
        dropout=0.0, head_channels=32,
    ),
    # Latent diffusion on 32x32x4 latents: attention at 16x16 and 8x8.
    "ldm-latent32": dict(
        in_channels=4, model_channels=128, channel_mult=(1, 2, 2, 4), num_res_blocks=2, attention_levels=(1, 2),
        dropout=0.1, num_heads=4,
    ),
}

# DDGAN presets: T, the generator and the discriminator. The paper's presets take the arguments of
# the official training commands (NVlabs/denoising-diffusion-gan README); "ngf" there is the
# discriminator's nf, `t_emb_dim` its default of 256. Parameter counts are pinned in the tests.
_SMALL_D = dict(channel_mult=(2, 4, 8, 8), full_res_block=True)  # the paper's 32x32 discriminator
_LARGE_D = dict(channel_mult=(2, 4, 8, 8, 8, 8, 8), full_res_block=False)  # its 256x256 one

# The paper's architecture at CPU size for 8x8x4 latents: 1.26 M + 0.21 M parameters.
_LATENT_DEMO_DDGAN = dict(
    num_timesteps=4,
    generator=dict(
        in_channels=4, nf=32, channel_mult=(1, 2), num_res_blocks=2, attention_levels=(1,), nz=50,
        z_emb_dim=64, n_mlp=2, output_activation="none",
    ),
    discriminator=dict(in_channels=4, nf=16, channel_mult=(2, 4, 4), full_res_block=True, t_emb_dim=64),
)

# The official CIFAR-10 command's networks (see "ddgan-cifar10" below).
_CIFAR10_DDGAN = dict(
    num_timesteps=4,
    generator=dict(
        in_channels=3, nf=128, channel_mult=(1, 2, 2, 2), num_res_blocks=2, attention_levels=(1,), nz=100,
        z_emb_dim=256, n_mlp=4,
    ),
    discriminator=dict(in_channels=3, nf=64, t_emb_dim=256, **_SMALL_D),
)

DDGAN_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        num_timesteps=4,
        generator=dict(
            in_channels=3, nf=16, channel_mult=(1, 2), num_res_blocks=1, attention_levels=(1,), nz=8,
            z_emb_dim=16, n_mlp=2,
        ),
        discriminator=dict(in_channels=3, nf=8, channel_mult=(2, 4, 4), full_res_block=True, t_emb_dim=16),
    ),
    # MNIST latent demo (4x4x4 or 8x8x4 latents), unbounded outputs.
    "small": _LATENT_DEMO_DDGAN,
    # The trilemma study on 8x8x4 Stacked-MNIST latents: the same networks under the study's own name;
    # the generator (1.26 M) is as large as the "trilemma" U-Net (1.27 M) it is compared with.
    "trilemma": _LATENT_DEMO_DDGAN,
    # CIFAR-10 command: --num_channels_dae 128 --ch_mult 1 2 2 2 --num_res_blocks 2 --nz 100 --z_emb_dim 256
    # --n_mlp 4 --num_timesteps 4 --ngf 64; attention at 16x16 (level 1). 48.43 M + 12.74 M parameters.
    "ddgan-cifar10": _CIFAR10_DDGAN,
    # Stacked MNIST (3 x 32 x 32): the official code trains it with the small discriminator and publishes
    # no command; this preset takes the CIFAR-10 command's network arguments.
    "ddgan-stackedmnist": _CIFAR10_DDGAN,
    # CelebA-HQ 256 command: --num_channels_dae 64 --ch_mult 1 1 2 2 4 4 --num_res_blocks 2 --num_timesteps 2
    # --z_emb_dim 256 --ngf 64 (nz 100, n_mlp 3: the defaults); attention at 16x16 (level 4).
    # 39.73 M + 27.74 M parameters.
    "ddgan-celebahq256": dict(
        num_timesteps=2,
        generator=dict(
            in_channels=3, nf=64, channel_mult=(1, 1, 2, 2, 4, 4), num_res_blocks=2, attention_levels=(4,),
            nz=100, z_emb_dim=256, n_mlp=3,
        ),
        discriminator=dict(in_channels=3, nf=64, t_emb_dim=256, **_LARGE_D),
    ),
}


SEG_UNET_PRESETS: dict[str, dict[str, Any]] = {
    # Unit tests: two levels (inputs 44, 48, 52, ... give outputs 4, 8, 12, ...).
    "tiny": dict(in_channels=1, num_classes=11, base_channels=8, depth=2, batch_norm=True),
    # CPU training on the embedded digit canvases (background + 10 digits): three levels, margin 44.
    "small": dict(in_channels=1, num_classes=11, base_channels=16, depth=3, batch_norm=True),
    # Ronneberger et al. 2015, Fig. 1: 64 channels doubling over four max-pools to 1024, a 572 x 572
    # tile gives 388 x 388, two classes (cell / border of the ISBI EM stacks). The paper places drop-out
    # at the end of the contracting path without naming its rate: set dropout= to use it.
    "unet-seg-paper": dict(in_channels=1, num_classes=2, base_channels=64, depth=4),
}


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; valid families: {', '.join(FAMILIES)}")


def _table(family: str) -> dict[str, dict[str, Any]]:
    _check_family(family)
    if family == "vae":
        return VAE_PRESETS
    if family == "unet":
        return UNET_PRESETS
    if family == "seg_unet":
        return SEG_UNET_PRESETS
    return DDGAN_PRESETS


def preset_names(family: str) -> list[str]:
    """Names of the presets of ``family`` (for ddgan_* families: the DDGAN preset names)."""
    return list(_table(family))


def _lookup(family: str, name: str) -> dict[str, Any]:
    table = _table(family)
    if name not in table:
        kind = "ddgan" if family.startswith("ddgan") else family
        raise ValueError(f"unknown {kind} preset {name!r}; valid presets: {', '.join(table)}")
    return table[name]


def preset_kwargs(family: str, name: str) -> dict[str, Any]:
    """A copy of the constructor kwargs of preset ``name`` in ``family``.

    Raises:
        ValueError: for an unknown family or preset (the message lists the valid names).
    """
    entry = _lookup(family, name)
    if family == "ddgan_generator":
        entry = entry["generator"]
    elif family == "ddgan_discriminator":
        entry = entry["discriminator"]
    return copy.deepcopy(entry)


def preset_downsampling(family: str, name: str) -> int:
    """The factor by which preset ``name`` of ``family`` downsamples (H and W must divide by it), by the
    network class's own rule, without building the network."""
    return _CLASSES[family].downsampling(preset_kwargs(family, name)["channel_mult"])


def ddgan_num_timesteps(name: str) -> int:
    """Number of denoising steps T of DDGAN preset ``name``."""
    return int(_lookup("ddgan_generator", name)["num_timesteps"])


def _check_kwargs(family: str, kwargs: dict[str, Any], source: str) -> None:
    params = inspect.signature(_CLASSES[family].__init__).parameters
    unknown = sorted(key for key in kwargs if key not in params or key == "self")
    if unknown:
        valid = ", ".join(p for p in params if p != "self")
        raise TypeError(f"unknown {family} argument(s) {', '.join(unknown)} in {source}; valid: {valid}")


def build_model(family: str, name: str, **overrides: Any) -> nn.Module:
    """Build preset ``name`` of ``family``, with keyword overrides replacing preset values.

    Args:
        family: one of FAMILIES.
        name: preset name (see :func:`preset_names`).
        **overrides: constructor kwargs replacing the preset's (e.g. in_channels, num_classes, dropout).

    Returns:
        The model; ``model.model_config`` holds the family and the complete resolved kwargs.

    Raises:
        ValueError: unknown family or preset.
        TypeError: an override that is not a constructor argument (named in the message).
    """
    kwargs = preset_kwargs(family, name)
    _check_kwargs(family, overrides, f"overrides of preset {name!r}")
    kwargs.update(overrides)
    return _CLASSES[family](**kwargs)


def model_from_config(model_config: dict[str, Any]) -> nn.Module:
    """Rebuild a model from its ``model_config`` ({"family": ..., "kwargs": {...}}).

    Raises:
        ValueError: malformed config or unknown family.
        TypeError: a kwarg the family's constructor does not take.
    """
    if not isinstance(model_config, dict) or "family" not in model_config or "kwargs" not in model_config:
        raise ValueError(f"model_config must be a dict with 'family' and 'kwargs', got {model_config!r}")
    family = model_config["family"]
    _check_family(family)
    kwargs = dict(model_config["kwargs"])
    _check_kwargs(family, kwargs, "model_config")
    return _CLASSES[family](**kwargs)
