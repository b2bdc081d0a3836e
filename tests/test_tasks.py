"""Learning, not just running: each task's step overfits a handful of samples."""

from __future__ import annotations

import torch

from distdiff.config import OptimConfig
from distdiff.diffusion import ddgan_q_sample_pairs, ddgan_schedule, ddpm_schedule
from distdiff.tasks.ldm import ddpm_loss
from distdiff.models import build_model
from distdiff.diffusion import ScheduleSpec
from distdiff.tasks import (
    DDGANTask,
    JointLatentTask,
    LatentSource,
    LDMTask,
    ModelSpec,
    SamplerSpec,
    Stage2Sampler,
    Stage2Spec,
    VAETask,
)
from distdiff.tasks.ddgan import r1_weight
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
        task.step(z0, {"label": torch.zeros(4, dtype=torch.long)}, updater, 0, g)
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
        metrics = task.step(x0, {}, updater, step, g)
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
    model = ModelSpec("ddgan", "ddgan", "ddgan_generator", ScheduleSpec("vp", 4), (SamplerSpec("ddgan"),),
                      nz=gen.model_config["kwargs"]["nz"])
    sampler = Stage2Sampler(Stage2Spec("pixel", (4, 8, 8), (4, 8, 8), (model,)), LatentSource(None), {"ddgan": gen})
    assert sampler.sample(model, SamplerSpec("ddgan"), [1, 2]).shape == (2, 4, 8, 8)
    assert calls == [3, 2, 1, 0]


class _Recorder:
    """An updater that records each loss and changes no weight."""

    def __init__(self, nets: dict):
        self.nets, self.losses = nets, {}

    def module(self, name):
        return self.nets[name]

    def update(self, name, loss):
        self.losses[name] = float(loss.detach())
        return {}


def test_r1_is_scaled_as_the_official_ddgan_script():
    """On an R1 step the penalty adds r1_gamma / 2 * E||grad||^2 ("official"), or that times lazy_reg."""
    assert r1_weight(0.02, 15, "official") == 0.01 and abs(r1_weight(0.02, 15, "stylegan2") - 0.15) < 1e-12
    torch.manual_seed(0)
    nets = {"ddgan_g": build_model("ddgan_generator", "tiny", in_channels=1),
            "ddgan_d": build_model("ddgan_discriminator", "tiny", in_channels=1)}
    x0 = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    losses = {}
    for label, gamma, scaling in (("none", 0.0, "official"), ("official", 0.02, "official"),
                                  ("stylegan2", 0.02, "stylegan2")):
        task = DDGANTask(ddgan_schedule(4), nz=8, r1_gamma=gamma, lazy_reg=15, r1_scaling=scaling)
        updater = _Recorder(nets)
        metrics = task.discriminator_step(x0, updater, step=30, generator=torch.Generator().manual_seed(2))
        losses[label], r1 = updater.losses["ddgan_d"], metrics.get("ddgan/r1")
    assert r1 is not None and r1 > 0
    assert abs((losses["official"] - losses["none"]) - 0.01 * r1) < 1e-5
    assert abs((losses["stylegan2"] - losses["none"]) - 0.15 * r1) < 1e-4
    # Between R1 steps nothing is added, whatever the scaling.
    task = DDGANTask(ddgan_schedule(4), nz=8, r1_gamma=0.02, lazy_reg=15)
    assert "ddgan/r1" not in task.discriminator_step(x0, _Recorder(nets), step=31,
                                                     generator=torch.Generator().manual_seed(2))


def test_joint_task_encodes_once_and_steps_every_member():
    vae = build_model("vae", "tiny", in_channels=1).eval()
    calls = {"encode": 0}
    original = vae.encode

    def counting_encode(x):
        calls["encode"] += 1
        return original(x)

    vae.encode = counting_encode
    unet = build_model("unet", "tiny", in_channels=4)
    nets = {"unet": (unet, 1e-3, (0.9, 0.999), "adamw")}
    for name in ("ddgan", "gan"):
        nets[f"{name}_g"] = (build_model("ddgan_generator", "tiny", in_channels=4, output_activation="none"), 1e-3,
                             (0.5, 0.9), "adam")
        nets[f"{name}_d"] = (build_model("ddgan_discriminator", "tiny", in_channels=4), 1e-3, (0.5, 0.9), "adam")
    updater = engines(**nets)
    task = JointLatentTask(LatentSource(vae), {"ldm": LDMTask(ddpm_schedule(50)),
                                               "ddgan": DDGANTask(ddgan_schedule(4), 8, 0.02, 4),
                                               "gan": DDGANTask(ddgan_schedule(1), 8, 0.02, 4, name="gan")})
    assert task.networks == ("unet", "ddgan_g", "ddgan_d", "gan_g", "gan_d")
    batch = {"image": torch.rand(4, 1, 16, 16) * 2 - 1, "label": torch.zeros(4, dtype=torch.long)}
    metrics = task.step(batch, updater, 0, torch.Generator().manual_seed(0))
    assert calls["encode"] == 1
    assert {"ldm/loss", "ddgan/d_loss", "ddgan/g_loss", "gan/d_loss", "gan/g_loss", "gan/r1"} <= metrics.keys()


def test_a_member_trains_the_same_whatever_trains_beside_it():
    """Adding the GAN baseline to stage 2 leaves the LDM's losses and weights unchanged, step for step."""
    def train(member_names):
        torch.manual_seed(0)
        nets = {"unet": (build_model("unet", "tiny", in_channels=4), 1e-3, (0.9, 0.999), "adamw")}
        members = {"ldm": LDMTask(ddpm_schedule(50))}
        if "gan" in member_names:
            nets["gan_g"] = (build_model("ddgan_generator", "tiny", in_channels=4, output_activation="none"), 1e-3,
                             (0.5, 0.9), "adam")
            nets["gan_d"] = (build_model("ddgan_discriminator", "tiny", in_channels=4), 1e-3, (0.5, 0.9), "adam")
            members["gan"] = DDGANTask(ddgan_schedule(1), 8, 0.02, 4, name="gan")
        updater = engines(**nets)
        task, generator = JointLatentTask(LatentSource(None), members), torch.Generator().manual_seed(0)
        losses = [task.step({"image": fixed_latents()}, updater, step, generator)["ldm/loss"] for step in range(3)]
        return losses, nets["unet"][0].state_dict()

    alone, with_gan = train(("ldm",)), train(("ldm", "gan"))
    assert alone[0] == with_gan[0]
    assert all(torch.equal(alone[1][k], with_gan[1][k]) for k in alone[1])
