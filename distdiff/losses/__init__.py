"""Training losses: diffusion MSE, VAE ELBO, non-saturating GAN losses and R1, weighted pixel cross entropy."""

from distdiff.losses.diffusion import eps_mse_loss
from distdiff.losses.gan import d_loss_fake, d_loss_real, g_loss_nonsaturating, r1_penalty
from distdiff.losses.seg import weighted_pixel_cross_entropy
from distdiff.losses.vae import kl_diag_gaussian, vae_elbo_loss

__all__ = [
    "eps_mse_loss",
    "d_loss_real",
    "d_loss_fake",
    "g_loss_nonsaturating",
    "r1_penalty",
    "kl_diag_gaussian",
    "vae_elbo_loss",
    "weighted_pixel_cross_entropy",
]
