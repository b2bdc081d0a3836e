"""A tiny, untrained stage-2 export in the trainer's format, for tests, smoke runs and benchmarks.

The folder holds what the trainer's stage-2 export writes: `export.json` (a `Stage2Spec`), raw and
EMA weights of the U-Net and the DDGAN (and GAN) generators, and the VAE in latent space. The networks are freshly built
"tiny" presets, so the images are noise, but every code path of the evaluator runs on them. Their
weights are jittered because fresh networks zero-initialise their output layers, which would make
every sample identical.
"""

from __future__ import annotations

from pathlib import Path

import torch


def _jitter(model: torch.nn.Module, scale: float) -> torch.nn.Module:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale)
    return model


def _text_kwargs(captions: dict | None) -> dict:
    if captions is None:
        return {}
    from distdiff.text import Tokenizer

    tokenizer = Tokenizer.from_record(captions)
    return {"text_encoder": dict(vocab_size=tokenizer.size, max_length=tokenizer.max_length, width=32, layers=2,
                                 heads=4), "cross_attention_levels": (1,)}


def write_tiny_export(out: str | Path, image_shape=(1, 32, 32), space: str = "pixel",
                      models=("ldm", "ddgan"), ldm_steps: int = 20, ddgan_steps: int = 2, seed: int = 0,
                      num_classes: int | None = None, jitter: float = 0.05, ddim_steps: int = 2,
                      ddim_eta: float = 0.0, captions: dict | None = None) -> Path:
    """Write a tiny export folder.

    Args:
        out: destination folder (created).
        image_shape: (C, H, W) of the images.
        space: "pixel" or "latent" (then a tiny VAE with f = 2 is included).
        models: subset of ("ldm", "ddgan", "gan"); "gan" is a DDGAN generator with T = 1.
        ldm_steps: T of the DDPM schedule.
        ddgan_steps: T of the DDGAN schedule.
        seed: initialisation seed.
        num_classes: class-conditional U-Net when set.
        jitter: std of the noise added to every weight.
        ddim_steps, ddim_eta: the LDM's exported DDIM settings.
        captions: a caption record (`distdiff.text.caption_record`): the U-Net is then text-conditioned
            (a two-layer text encoder, cross-attention at level 1 and the middle).

    Returns:
        the folder.
    """
    from distdiff.diffusion import ScheduleSpec
    from distdiff.models import build_model, save_weights
    from distdiff.tasks import ModelSpec, SamplerSpec, Stage2Spec

    torch.manual_seed(seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    channels, height, width = image_shape
    latent_shape = tuple(image_shape)
    if space == "latent":
        vae = _jitter(build_model("vae", "tiny", in_channels=channels), jitter)
        latent_shape = (vae.model_config["kwargs"]["latent_channels"], height // vae.downsample_factor,
                        width // vae.downsample_factor)
        save_weights(vae, out / "vae")
    files, specs = [], []
    for name in models:
        if name == "ldm":
            net = _jitter(build_model("unet", "tiny", in_channels=latent_shape[0], num_classes=num_classes,
                                      **_text_kwargs(captions)), jitter)
            stem = "unet"
            specs.append(ModelSpec("ldm", "diffusion", stem, ScheduleSpec("linear", ldm_steps),
                                   (SamplerSpec("ddpm"), SamplerSpec("ddim", ddim_steps, ddim_eta)),
                                   parameters=sum(p.numel() for p in net.parameters())))
        else:
            net = _jitter(build_model("ddgan_generator", "tiny", in_channels=latent_shape[0]), jitter)
            stem = f"{name}_generator"
            specs.append(ModelSpec(name, "ddgan", stem, ScheduleSpec("vp", 1 if name == "gan" else ddgan_steps),
                                   (SamplerSpec("ddgan"),), net.model_config["kwargs"]["nz"],
                                   sum(p.numel() for p in net.parameters())))
        save_weights(net, out / stem)
        save_weights(net, out / f"{stem}_ema")
        files += [stem, f"{stem}_ema"]
    Stage2Spec(space, tuple(image_shape), latent_shape, tuple(specs), num_classes, 1.0,
               "vae" if space == "latent" else None, tuple(files), captions).write(out / "export.json")
    return out
