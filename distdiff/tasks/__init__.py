"""One training step per model family: models + diffusion + losses, with no ranks or engines."""

from distdiff.tasks.base import NonFiniteLossError, Updater, check_finite, set_requires_grad
from distdiff.tasks.ddgan import DDGANTask
from distdiff.tasks.joint import JointLatentTask
from distdiff.tasks.latents import LatentSource, VAEEncoder
from distdiff.tasks.ldm import LDMTask
from distdiff.tasks.samplers import SAMPLERS, Stage2Sampler, sampler_key, sampler_label, sampler_nfe, select_samplers
from distdiff.tasks.spec import ModelSpec, SamplerSpec, Stage2Spec
from distdiff.tasks.stage2 import MEMBERS, Stage2Setup, build_stage2, enabled_members
from distdiff.tasks.vae import VAETask

__all__ = [
    "NonFiniteLossError", "Updater", "check_finite", "set_requires_grad", "DDGANTask", "JointLatentTask",
    "LatentSource", "VAEEncoder", "LDMTask", "SAMPLERS", "Stage2Sampler", "sampler_key", "sampler_label", "sampler_nfe",
    "select_samplers", "ModelSpec", "SamplerSpec", "Stage2Spec", "MEMBERS", "Stage2Setup", "build_stage2",
    "enabled_members", "VAETask",
]
