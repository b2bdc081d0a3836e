"""distdiff: distributed training of KL-VAEs, latent diffusion U-Nets and Denoising Diffusion GANs."""

__version__ = "0.1.0"
