"""Non-saturating GAN losses and the R1 gradient penalty (Goodfellow et al. 2014; Mescheder et al. 2018).

With D's logits l and softplus(u) = log(1 + e^u):
    discriminator: softplus(-l_real) + softplus(l_fake)      (= -log sigmoid(l_real) - log(1 - sigmoid(l_fake)))
    generator:     softplus(-l_fake)                          (= -log sigmoid(l_fake), the non-saturating form)
    R1:            E_real || d l / d x ||^2
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def d_loss_real(logits: torch.Tensor) -> torch.Tensor:
    """The discriminator's loss on its logits (B,) or (B, 1) for real data: softplus(-logits).mean()."""
    return F.softplus(-logits).mean()


def d_loss_fake(logits: torch.Tensor) -> torch.Tensor:
    """The discriminator's loss on its logits (B,) or (B, 1) for generated data: softplus(logits).mean()."""
    return F.softplus(logits).mean()


def g_loss_nonsaturating(fake_logits: torch.Tensor) -> torch.Tensor:
    """The generator's non-saturating loss on D's logits (B,) or (B, 1) for generated data:
    softplus(-fake_logits).mean() (the real-data loss of D, applied to fakes)."""
    return F.softplus(-fake_logits).mean()


def r1_penalty(real_logits: torch.Tensor, real_inputs: torch.Tensor) -> torch.Tensor:
    """R1 penalty: mean over the batch of || d(sum logits) / d real_inputs ||^2.

    The gradient of the summed logits is each sample's own gradient where sample i's logit depends
    only on input i; a minibatch-stddev layer adds small cross-sample terms, as in the official DDGAN
    and StyleGAN2 code, which take the same sum. The graph is kept (create_graph=True) so the penalty
    can be back-propagated into D's weights. The caller scales it (see `distdiff.tasks.ddgan.r1_weight`:
    gamma / 2 every k-th step as the official DDGAN script, or times k as StyleGAN2).

    Args:
        real_logits: (B,) or (B, 1) logits computed from ``real_inputs``.
        real_inputs: (B, ...) tensor with ``requires_grad=True``; for DDGAN's discriminator this
            is x_t, the real less noisy sample.

    Returns:
        Scalar penalty.
    """
    if not real_inputs.requires_grad:
        raise ValueError("r1_penalty: real_inputs must have requires_grad=True before the D forward pass")
    (grad,) = torch.autograd.grad(outputs=real_logits.sum(), inputs=real_inputs, create_graph=True)
    return grad.pow(2).reshape(grad.shape[0], -1).sum(dim=1).mean()
