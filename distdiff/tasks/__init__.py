"""One training step per model family: models + diffusion + losses, with no ranks or engines."""

from distdiff.tasks.base import NonFiniteLossError, Updater, check_finite, set_requires_grad
from distdiff.tasks.ddgan import DDGANTask
from distdiff.tasks.joint import JointLatentTask
from distdiff.tasks.latents import LatentSource
from distdiff.tasks.ldm import LDMTask
from distdiff.tasks.sampling import LatentSampler
from distdiff.tasks.vae import VAETask

__all__ = [
    "NonFiniteLossError", "Updater", "check_finite", "set_requires_grad", "DDGANTask",
    "JointLatentTask", "LatentSampler", "LatentSource", "LDMTask", "VAETask",
]
