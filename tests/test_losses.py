"""Tests of the VAE, diffusion and GAN losses against closed forms and torch references."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal, kl_divergence

from distdiff.losses import (
    d_loss_fake,
    d_loss_real,
    eps_mse_loss,
    g_loss_nonsaturating,
    kl_diag_gaussian,
    r1_penalty,
    vae_elbo_loss,
)


def _gen(seed):
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def test_kl_matches_torch_distributions():
    g = _gen(0)
    mean = torch.randn(4, 3, 2, 2, generator=g, dtype=torch.float64)
    logvar = torch.randn(4, 3, 2, 2, generator=g, dtype=torch.float64)
    ref = kl_divergence(Normal(mean, (0.5 * logvar).exp()), Normal(0.0, 1.0)).reshape(4, -1).sum(1)
    out = kl_diag_gaussian(mean, logvar)
    assert out.shape == (4,)
    assert torch.allclose(out, ref, atol=1e-12)
    assert torch.allclose(kl_diag_gaussian(torch.zeros(2, 5), torch.zeros(2, 5)), torch.zeros(2))


def _vae_inputs(seed=1):
    g = _gen(seed)
    x = torch.rand(3, 1, 4, 4, generator=g, dtype=torch.float64) * 2 - 1
    raw = torch.randn(3, 1, 4, 4, generator=g, dtype=torch.float64)
    mean = torch.randn(3, 2, 2, 2, generator=g, dtype=torch.float64)
    logvar = torch.randn(3, 2, 2, 2, generator=g, dtype=torch.float64) * 0.3
    return raw, x, mean, logvar


@pytest.mark.parametrize("beta", [1.0, 0.25])
def test_vae_gaussian_elbo_matches_manual(beta):
    raw, x, mean, logvar = _vae_inputs()
    loss, metrics = vae_elbo_loss(raw, x, mean, logvar, beta=beta, likelihood="gaussian")
    recon = torch.stack([0.5 * ((raw[i] - x[i]) ** 2).sum() for i in range(3)])
    kl = torch.stack([0.5 * (mean[i] ** 2 + logvar[i].exp() - 1 - logvar[i]).sum() for i in range(3)])
    assert loss.item() == pytest.approx((recon + beta * kl).mean().item(), rel=1e-12)
    assert metrics["recon"].item() == pytest.approx(recon.mean().item(), rel=1e-12)
    assert metrics["kl"].item() == pytest.approx(kl.mean().item(), rel=1e-12)
    assert metrics["loss"].item() == pytest.approx(loss.item(), rel=1e-12)
    assert all(not v.requires_grad and v.shape == () for v in metrics.values())


def test_vae_bernoulli_elbo_matches_manual():
    raw, x, mean, logvar = _vae_inputs(2)
    raw.requires_grad_(True)
    loss, metrics = vae_elbo_loss(raw, x, mean, logvar, likelihood="bernoulli")
    y = (x + 1) / 2
    p = torch.sigmoid(raw.detach())
    bce = -(y * p.log() + (1 - y) * (1 - p).log())  # (B, C, H, W)
    recon = bce.reshape(3, -1).sum(1)
    assert metrics["recon"].item() == pytest.approx(recon.mean().item(), rel=1e-10)
    loss.backward()
    # d(BCE)/d(logit) = sigmoid(logit) - target, divided by B for the batch mean.
    assert torch.allclose(raw.grad, (p - y) / 3, atol=1e-12)
    with pytest.raises(ValueError, match="likelihood"):
        vae_elbo_loss(raw, x, mean, logvar, likelihood="laplace")
    with pytest.raises(ValueError, match="shape"):
        vae_elbo_loss(raw[:, :, :2], x, mean, logvar)


def test_eps_mse_loss():
    g = _gen(3)
    a, b = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    assert eps_mse_loss(a, b).item() == pytest.approx(F.mse_loss(a, b).item(), rel=1e-6)
    out = eps_mse_loss(a.bfloat16(), b.bfloat16())
    assert out.dtype == torch.float32
    assert out.item() == pytest.approx(((a.bfloat16().float() - b.bfloat16().float()) ** 2).mean().item(), rel=1e-6)
    with pytest.raises(ValueError, match="shape"):
        eps_mse_loss(a, b[:1])


def test_gan_losses_closed_forms():
    logits = torch.tensor([-3.0, -0.5, 0.0, 2.0, 10.0], dtype=torch.float64)
    sig = torch.sigmoid(logits)
    assert d_loss_real(logits).item() == pytest.approx(-sig.log().mean().item(), rel=1e-12)
    assert d_loss_fake(logits).item() == pytest.approx(-(1 - sig).log().mean().item(), rel=1e-10)
    assert g_loss_nonsaturating(logits).item() == pytest.approx(-sig.log().mean().item(), rel=1e-12)
    assert d_loss_real(torch.zeros(4)).item() == pytest.approx(math.log(2))
    # Non-saturating: a confidently rejected fake still gets a gradient of about -1 / B per logit.
    fake = torch.full((4,), -20.0, requires_grad=True)
    g_loss_nonsaturating(fake).backward()
    assert torch.allclose(fake.grad, torch.full((4,), -0.25), atol=1e-6)


def test_r1_penalty_on_linear_discriminator_is_weight_norm():
    g = _gen(4)
    w = torch.randn(2 * 3 * 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(0.7, dtype=torch.float64)
    x = torch.randn(5, 2, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    logits = x.reshape(5, -1) @ w + b  # (B,)
    pen = r1_penalty(logits, x)
    assert pen.item() == pytest.approx((w.detach() ** 2).sum().item(), rel=1e-12)
    pen.backward()  # create_graph=True: the penalty is differentiable in D's weights
    assert torch.allclose(w.grad, 2 * w.detach(), atol=1e-12)
    with pytest.raises(ValueError, match="requires_grad"):
        r1_penalty(logits, x.detach())


def test_r1_penalty_is_a_batch_mean_of_per_sample_norms():
    x = torch.tensor([[1.0, 2.0], [3.0, -1.0]], dtype=torch.float64, requires_grad=True)
    logits = (x**2).sum(1, keepdim=True)  # (B, 1); grad = 2x
    expected = ((2 * x.detach()) ** 2).sum(1).mean()
    assert r1_penalty(logits, x).item() == pytest.approx(expected.item(), rel=1e-12)
