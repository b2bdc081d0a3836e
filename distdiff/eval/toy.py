"""A tiny, untrained stage-2 export in the trainer's format, for tests, smoke runs and benchmarks.

The folder holds what the trainer's stage-2 export writes: `export.json`, raw and EMA weights of
the U-Net and the DDGAN generator, and the VAE in latent space. The networks are freshly built
"tiny" presets, so the images are noise, but every code path of the evaluator runs on them. Their
weights are jittered because fresh networks zero-initialise their output layers, which would make
every sample identical.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch


def _jitter(model: torch.nn.Module, scale: float) -> torch.nn.Module:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale)
    return model


def write_tiny_export(out: str | Path, image_shape=(1, 32, 32), space: str = "pixel",
                      models=("ldm", "ddgan"), ldm_steps: int = 20, ddgan_steps: int = 2, seed: int = 0,
                      num_classes: int | None = None, jitter: float = 0.05) -> Path:
    """Write a tiny export folder.

    Args:
        out: destination folder (created).
        image_shape: (C, H, W) of the images.
        space: "pixel" or "latent" (then a tiny VAE with f = 2 is included).
        models: subset of ("ldm", "ddgan").
        ldm_steps: T of the DDPM schedule.
        ddgan_steps: T of the DDGAN schedule.
        seed: initialisation seed.
        num_classes: class-conditional U-Net when set.
        jitter: std of the noise added to every weight.

    Returns:
        the folder.
    """
    from distdiff.models import build_model, save_weights

    torch.manual_seed(seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    channels, height, width = image_shape
    latent_shape = list(image_shape)
    if space == "latent":
        vae = _jitter(build_model("vae", "tiny", in_channels=channels), jitter)
        latent_shape = [vae.model_config["kwargs"]["latent_channels"], height // vae.downsample_factor,
                        width // vae.downsample_factor]
        save_weights(vae, out / "vae")
    present = []
    if "ldm" in models:
        unet = _jitter(build_model("unet", "tiny", in_channels=latent_shape[0], num_classes=num_classes), jitter)
        save_weights(unet, out / "unet")
        save_weights(unet, out / "unet_ema")
        present += ["unet", "unet_ema"]
    nz = 8
    if "ddgan" in models:
        gen = _jitter(build_model("ddgan_generator", "tiny", in_channels=latent_shape[0]), jitter)
        nz = gen.model_config["kwargs"]["nz"]
        save_weights(gen, out / "ddgan_generator")
        save_weights(gen, out / "ddgan_generator_ema")
        present += ["ddgan_generator", "ddgan_generator_ema"]
    meta = {
        "models": present, "vae": "vae" if space == "latent" else None, "space": space,
        "image_shape": list(image_shape), "latent_shape": latent_shape, "num_classes": num_classes,
        "guidance_scale": 1.0,
        "ldm": {"num_steps": ldm_steps, "beta_start": 1e-4, "beta_end": 0.02, "kind": "linear"}
        if "ldm" in models else None,
        "ddgan": {"num_steps": ddgan_steps, "beta_min": 0.1, "beta_max": 20.0, "nz": nz} if "ddgan" in models else None,
    }
    (out / "export.json").write_text(json.dumps(meta, indent=1))
    return out
