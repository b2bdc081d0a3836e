"""What was trained travels as one record: schedule specs, the stage-2 spec, the sampler registry."""

from __future__ import annotations

import json

import pytest
import torch

from distdiff.config import RunConfig, load_config
from distdiff.diffusion import ScheduleSpec, ddgan_schedule, ddpm_schedule
from distdiff.tasks import (
    SAMPLERS,
    LatentSource,
    ModelSpec,
    SamplerSpec,
    Stage2Spec,
    build_stage2,
    sampler_key,
    sampler_label,
    sampler_nfe,
    select_samplers,
)


@pytest.mark.parametrize("spec", [
    ScheduleSpec("linear", 1000, beta_start=1e-4, beta_end=0.02),
    ScheduleSpec("scaled_linear", 1000, beta_start=0.0015, beta_end=0.0195),
    ScheduleSpec("cosine", 50),
    ScheduleSpec("vp", 4, beta_min=0.1, beta_max=20.0),
    ScheduleSpec("vp", 1),
])
def test_schedule_spec_round_trips_and_builds_the_same_tables(spec):
    again = ScheduleSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec
    built = spec.build()
    reference = (ddgan_schedule(spec.num_steps, spec.beta_min, spec.beta_max) if spec.kind == "vp"
                 else ddpm_schedule(spec.num_steps, spec.beta_start, spec.beta_end, kind=spec.kind))
    assert torch.equal(built.betas, reference.betas)


def test_scaled_linear_is_linear_in_sqrt_beta():
    betas = ScheduleSpec("scaled_linear", 5, beta_start=0.01, beta_end=0.09).build().betas
    assert torch.allclose(betas.sqrt(), torch.linspace(0.1, 0.3, 5, dtype=torch.float64))


def test_schedule_spec_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown schedule kind 'quadratic'"):
        ScheduleSpec("quadratic", 10)
    with pytest.raises(ValueError, match="num_steps must be >= 1"):
        ScheduleSpec("vp", 0)
    with pytest.raises(ValueError, match="unknown schedule field"):
        ScheduleSpec.from_dict({"kind": "vp", "num_steps": 4, "beta_maximum": 3})


def _spec() -> Stage2Spec:
    ldm = ModelSpec("ldm", "diffusion", "unet", ScheduleSpec("linear", 1000),
                    (SamplerSpec("ddpm"), SamplerSpec("ddim", 50, 1.0)), parameters=10)
    ddgan = ModelSpec("ddgan", "ddgan", "ddgan_generator", ScheduleSpec("vp", 4), (SamplerSpec("ddgan"),), 50, 12)
    gan = ModelSpec("gan", "ddgan", "gan_generator", ScheduleSpec("vp", 1), (SamplerSpec("ddgan"),), 50, 12)
    return Stage2Spec("latent", (3, 32, 32), (4, 8, 8), (ldm, ddgan, gan), None, 1.0, "vae", ("unet_ema",))


def test_stage2_spec_round_trips_through_json():
    spec = _spec()
    data = json.loads(json.dumps(spec.to_dict()))
    assert data["format"] == "distdiff-stage2" and data["models"][0]["samplers"][1] == {
        "name": "ddim", "steps": 50, "eta": 1.0}
    assert Stage2Spec.from_dict(data) == spec
    with pytest.raises(ValueError, match="unknown field"):
        Stage2Spec.from_dict({**data, "ddim_eta": 0})
    with pytest.raises(ValueError, match="lacks latent_shape"):
        Stage2Spec.from_dict({k: v for k, v in data.items() if k != "latent_shape"})
    with pytest.raises(KeyError, match=r"no model 'vae' in this export \(models: ldm, ddgan, gan\)"):
        spec.model("vae")


def test_sampler_registry_names_counts_and_keys():
    spec = _spec()
    ldm, ddgan, gan = spec.models
    assert set(SAMPLERS) == {"ddpm", "ddim", "ddgan"}
    assert [sampler_nfe(m, s) for m, s in select_samplers(spec, "all")] == [1000, 50, 4, 1]
    assert [sampler_label(m, s) for m, s in select_samplers(spec, "all")] == [
        "LDM DDPM-1000", "LDM DDIM-50 (eta 1)", "DDGAN-4", "GAN-1"]
    assert [sampler_key(m, s) for m, s in select_samplers(spec, "all")] == [
        "ldm-ddpm1000", "ldm-ddim50-eta1", "ddgan-4step", "gan-1step"]
    # A selection keeps the exported settings (eta 1) unless it names the steps.
    (_, settings), = select_samplers(spec, "ldm:ddim:100")
    assert (settings.steps, settings.eta) == (100, 1.0)
    assert [m.name for m, _ in select_samplers(spec, "gan,ldm:ddpm")] == ["gan", "ldm"]
    with pytest.raises(ValueError, match="sampler 'ddim' cannot sample model 'ddgan'"):
        select_samplers(spec, "ddgan:ddim")
    with pytest.raises(ValueError, match="unknown sampler 'plms'"):
        select_samplers(spec, "ldm:plms")
    with pytest.raises(KeyError, match="no model 'unet'"):
        select_samplers(spec, "unet")


def test_build_stage2_records_what_the_config_trains():
    cfg = load_config(RunConfig, None, ["ldm.preset=tiny", "ddgan.preset=tiny", "gan.enabled=true",
                                        "gan.preset=tiny", "ldm.ddim_eta=1.0", "ldm.ddim_steps=20",
                                        "ddgan.g_optim.schedule=cosine", "stage2.steps=70"])
    setup = build_stage2(cfg, LatentSource(None), (1, 32, 32), (4, 8, 8), None)
    assert list(setup.members) == ["ldm", "ddgan", "gan"]
    assert list(setup.networks) == ["unet", "ddgan_g", "ddgan_d", "gan_g", "gan_d"]
    assert setup.networks["ddgan_g"].optim.decay_steps == 70  # a cosine schedule spans the stage
    assert setup.networks["gan_g"].optim.decay_steps == 0  # constant: nothing to resolve
    ldm, ddgan, gan = setup.spec.models
    assert ldm.samplers[1] == SamplerSpec("ddim", 20, 1.0)
    assert (ddgan.schedule.num_steps, gan.schedule.num_steps) == (4, 1)
    assert ddgan.parameters == sum(p.numel() for p in setup.networks["ddgan_g"].module.parameters())
    assert setup.networks["gan_d"].export_name == "gan_discriminator" and setup.networks["gan_d"].ema_decay is None
