"""Learning, not just running: each task's step overfits a handful of samples."""

from __future__ import annotations

import torch

from distdiff.config import OptimConfig
from distdiff.diffusion import ddgan_q_sample_pairs, ddgan_schedule, ddpm_loss, ddpm_schedule
from distdiff.models import build_model
from distdiff.tasks import DDGANTask, JointLatentTask, LatentSampler, LatentSource, LDMTask, VAETask
from distdiff.train.engines import EngineSet, TorchEngine


def engines(**nets) -> EngineSet:
    return EngineSet({name: TorchEngine(net, OptimConfig(lr=lr, betas=betas, grad_clip=1.0), kind)
                      for name, (net, lr, betas, kind) in nets.items()})


def fixed_latents(n=4, c=4, side=8, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, side, side, generator=g).clamp(-2, 2)  # (n, c, side, side)


def test_vae_task_loss_falls():
    torch.manual_seed(0)
    vae = build_model("vae", "tiny", in_channels=1)
    updater = engines(vae=(vae, 2e-3, (0.9, 0.999), "adamw"))
    task = VAETask(kl_weight=1e-4, likelihood="gaussian")
    x = torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    g = torch.Generator().manual_seed(2)
    losses = [task.step({"image": x}, updater, g)["vae/loss"] for _ in range(120)]
    assert sum(losses[-10:]) / 10 < 0.3 * sum(losses[:10]) / 10


def test_ldm_task_fits_fixed_latents():
    torch.manual_seed(0)
    unet = build_model("unet", "tiny", in_channels=4)
    schedule = ddpm_schedule(100)
    updater = engines(unet=(unet, 2e-3, (0.9, 0.999), "adamw"))
    task = LDMTask(schedule)
    z0 = fixed_latents()
    t = torch.tensor([5, 30, 60, 90])
    noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(3))

    def held_out_loss():
        with torch.no_grad():
            return float(ddpm_loss(unet, schedule, z0, t=t, noise=noise))

    before = held_out_loss()
    g = torch.Generator().manual_seed(4)
    for _ in range(150):
        task.step(z0, torch.zeros(4, dtype=torch.long), updater, g)
    assert held_out_loss() < 0.5 * before


def test_ddgan_generator_learns_to_denoise_a_memorised_image():
    """With one training image, the generator's x0 prediction at the least noisy step must converge to it."""
    torch.manual_seed(0)
    gen = build_model("ddgan_generator", "tiny", in_channels=1)
    disc = build_model("ddgan_discriminator", "tiny", in_channels=1)
    schedule = ddgan_schedule(4)
    nz = gen.model_config["kwargs"]["nz"]
    updater = engines(ddgan_g=(gen, 1e-3, (0.5, 0.9), "adam"), ddgan_d=(disc, 1e-3, (0.5, 0.9), "adam"))
    task = DDGANTask(schedule, nz=nz, r1_gamma=0.01, lazy_reg=4)
    image = (torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(0)) > 0.5).float() * 1.6 - 0.8
    x0 = image.repeat(16, 1, 1, 1)  # (16, 1, 8, 8)
    t0 = torch.zeros(16, dtype=torch.long)
    probe = torch.Generator().manual_seed(1)
    _, x1 = ddgan_q_sample_pairs(schedule, x0, t0, generator=probe)
    z = torch.randn(16, nz, generator=probe)

    def x0_error() -> float:
        with torch.no_grad():
            return float(((gen(x1, t0, z) - x0) ** 2).mean())

    before = x0_error()
    g = torch.Generator().manual_seed(5)
    for step in range(400):
        metrics = task.step(x0, updater, step, g)
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    assert "ddgan/r1" in task.discriminator_step(x0, updater, 0, g)
    assert x0_error() < 0.3 * before


def test_ddgan_sampler_uses_the_generator_t_times():
    gen = build_model("ddgan_generator", "tiny", in_channels=4, output_activation="none")
    calls = []
    original = gen.forward

    def counting(x_tp1, t, z):
        calls.append(int(t[0]))
        return original(x_tp1, t, z)

    gen.forward = counting
    sampler = LatentSampler(LatentSource(None), (4, 8, 8), generator=gen, ddgan_schedule=ddgan_schedule(4),
                            nz=gen.model_config["kwargs"]["nz"])
    assert sampler.sample_ddgan([1, 2]).shape == (2, 4, 8, 8)
    assert calls == [3, 2, 1, 0]


def test_joint_task_encodes_once_and_steps_both_models():
    vae = build_model("vae", "tiny", in_channels=1).eval()
    calls = {"encode": 0}
    original = vae.encode

    def counting_encode(x):
        calls["encode"] += 1
        return original(x)

    vae.encode = counting_encode
    unet = build_model("unet", "tiny", in_channels=4)
    gen = build_model("ddgan_generator", "tiny", in_channels=4, output_activation="none")
    disc = build_model("ddgan_discriminator", "tiny", in_channels=4)
    updater = engines(unet=(unet, 1e-3, (0.9, 0.999), "adamw"), ddgan_g=(gen, 1e-3, (0.5, 0.9), "adam"),
                      ddgan_d=(disc, 1e-3, (0.5, 0.9), "adam"))
    task = JointLatentTask(LatentSource(vae), LDMTask(ddpm_schedule(50)),
                           DDGANTask(ddgan_schedule(4), gen.model_config["kwargs"]["nz"], 0.02, 4))
    batch = {"image": torch.rand(4, 1, 16, 16) * 2 - 1, "label": torch.zeros(4, dtype=torch.long)}
    metrics = task.step(batch, updater, 0, torch.Generator().manual_seed(0))
    assert calls["encode"] == 1
    assert {"ldm/loss", "ddgan/d_loss", "ddgan/g_loss"} <= metrics.keys()
