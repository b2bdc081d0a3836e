"""Tests of the DDGAN schedule, pair sampling, posterior sampling and sampler."""

import math

import pytest
import torch

from distdiff.diffusion import (
    ddgan_posterior_sample,
    ddgan_q_sample_pairs,
    ddgan_sample,
    ddgan_schedule,
    per_sample_generators,
)

BETA_MIN, BETA_MAX = 0.1, 20.0


pytestmark = pytest.mark.usefixtures("one_thread")


def _gen(seed):
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def _vp_abar(u):
    """Continuous VP signal level, written out independently of the library."""
    return math.exp(-0.5 * u * u * (BETA_MAX - BETA_MIN) - u * BETA_MIN)


def _grid(T):
    return [i / T * (1 - 1e-3) + 1e-3 for i in range(T + 1)]


def test_ddgan_schedule_pinned_betas_t4():
    s = ddgan_schedule(4, BETA_MIN, BETA_MAX)
    # Values of 1 - abar(t_i) / abar(t_{i-1}) on the DDGAN grid (T = 4, beta in [0.1, 20]).
    pinned = [0.47825530296187846, 0.8492060043167426, 0.9564177091531402, 0.9874039011510113]
    assert s.num_steps == 4 and s.betas.dtype == torch.float64
    assert s.betas.tolist() == pytest.approx(pinned, rel=1e-12)
    grid = _grid(4)
    formula = [1 - _vp_abar(grid[i]) / _vp_abar(grid[i - 1]) for i in range(1, 5)]
    assert s.betas.tolist() == pytest.approx(formula, rel=1e-12)


@pytest.mark.parametrize("T", [1, 2, 4, 8])
def test_ddgan_alpha_bar_matches_continuous_vp_formula(T):
    s = ddgan_schedule(T, BETA_MIN, BETA_MAX)
    grid = _grid(T)
    # The real betas telescope to abar(t_{i+1}) / abar(t_0), because the grid starts at 1e-3.
    expected = [_vp_abar(grid[i + 1]) / _vp_abar(grid[0]) for i in range(T)]
    assert s.alphas_cumprod.tolist() == pytest.approx(expected, rel=1e-10)
    assert s.alphas_cumprod_prev[0].item() == 1.0
    assert s.posterior_mean_coef1[0].item() == pytest.approx(1.0, abs=1e-15)
    assert s.posterior_mean_coef2[0].item() == 0.0


def _stats_at(s, t_val, n=200_000, seed=0):
    x0 = torch.tensor([-0.8, 0.3, 1.0], dtype=torch.float64).reshape(1, 3, 1, 1).expand(n, 3, 1, 1)
    t = torch.full((n,), t_val, dtype=torch.int64)
    x_t, x_tp1 = ddgan_q_sample_pairs(s, x0, t, generator=_gen(seed))
    return x0, t, x_t, x_tp1


@pytest.mark.parametrize("t_val", [0, 1, 3])
def test_pairs_marginals_match_q(t_val):
    s = ddgan_schedule(4)
    x0, t, x_t, x_tp1 = _stats_at(s, t_val)
    n = x0.shape[0]
    c = x0[0].flatten()
    abar, abar_prev = s.alphas_cumprod[t_val].item(), s.alphas_cumprod_prev[t_val].item()
    tol = 5 / math.sqrt(n)
    # x_tp1 ~ q(x_{t+1} | x0) = N(sqrt(abar[t]) x0, 1 - abar[t])
    assert torch.allclose(x_tp1.mean(0).flatten(), math.sqrt(abar) * c, atol=tol)
    assert torch.allclose(x_tp1.var(0).flatten(), torch.full((3,), 1 - abar, dtype=torch.float64), atol=0.01)
    # x_t ~ N(sqrt(abar_prev[t]) x0, 1 - abar_prev[t]); at t = 0 it is x0 itself.
    if t_val == 0:
        assert torch.equal(x_t, x0)
    else:
        assert torch.allclose(x_t.mean(0).flatten(), math.sqrt(abar_prev) * c, atol=tol)
        assert torch.allclose(x_t.var(0).flatten(), torch.full((3,), 1 - abar_prev, dtype=torch.float64), atol=0.01)
    cov = ((x_t - x_t.mean(0)) * (x_tp1 - x_tp1.mean(0))).mean(0).flatten()
    expected_cov = math.sqrt(s.alphas[t_val].item()) * (1 - abar_prev)
    assert torch.allclose(cov, torch.full((3,), expected_cov, dtype=torch.float64), atol=0.01)


def test_pairs_with_per_sample_generators_are_layout_independent():
    s = ddgan_schedule(4)
    x0 = torch.randn(3, 2, 4, 4, generator=_gen(1))
    t = torch.tensor([0, 2, 3])
    a_t, a_tp1 = ddgan_q_sample_pairs(s, x0, t, generator=per_sample_generators([5, 6, 7]))
    b_t, b_tp1 = ddgan_q_sample_pairs(s, x0[2:], t[2:], generator=per_sample_generators([7]))
    assert torch.equal(a_t[2], b_t[0]) and torch.equal(a_tp1[2], b_tp1[0])


def test_posterior_coefficients_match_gaussian_conditioning():
    s = ddgan_schedule(4)
    x0_val, x_tp1_val = 0.6, -1.1
    for k in range(1, 4):
        ab_prev, alpha, beta = s.alphas_cumprod_prev[k].item(), s.alphas[k].item(), s.betas[k].item()
        var_t = 1 - ab_prev  # Var(x_t | x0)
        cov = math.sqrt(alpha) * var_t  # Cov(x_t, x_tp1 | x0)
        var_tp1 = alpha * var_t + beta  # Var(x_tp1 | x0)
        mean_ref = math.sqrt(ab_prev) * x0_val + cov / var_tp1 * (x_tp1_val - math.sqrt(alpha * ab_prev) * x0_val)
        post_var_ref = var_t - cov**2 / var_tp1
        x0 = torch.full((1, 1, 1, 1), x0_val, dtype=torch.float64)
        x_tp1 = torch.full((1, 1, 1, 1), x_tp1_val, dtype=torch.float64)
        t = torch.tensor([k])
        mean = ddgan_posterior_sample(s, x0, x_tp1, t, None)
        one = ddgan_posterior_sample(s, x0, x_tp1, t, torch.ones_like(x0))
        assert mean.item() == pytest.approx(mean_ref, rel=1e-10)
        assert (one - mean).item() == pytest.approx(math.sqrt(post_var_ref), rel=1e-10)


@pytest.mark.parametrize("t_val", [1, 2, 3])
def test_posterior_sample_with_true_x0_reproduces_the_joint(t_val):
    # If x_t' ~ q(x_t | x_tp1, x0) for the true x0, then (x_t', x_tp1) has the same law as (x_t, x_tp1).
    s = ddgan_schedule(4)
    x0, t, x_t, x_tp1 = _stats_at(s, t_val, seed=3)
    noise = torch.randn(x0.shape, generator=_gen(4), dtype=torch.float64)
    x_t_post = ddgan_posterior_sample(s, x0, x_tp1, t, noise)
    tol = 5 / math.sqrt(x0.shape[0])
    assert torch.allclose(x_t_post.mean(0), x_t.mean(0), atol=2 * tol)
    assert torch.allclose(x_t_post.var(0), x_t.var(0), atol=0.01)

    def cov(a, b):
        return ((a - a.mean(0)) * (b - b.mean(0))).mean(0)

    assert torch.allclose(cov(x_t_post, x_tp1), cov(x_t, x_tp1), atol=0.01)


def test_posterior_sample_adds_no_noise_at_t0():
    s = ddgan_schedule(4)
    x0 = torch.randn(2, 1, 3, 3, generator=_gen(0), dtype=torch.float64)
    x_tp1 = torch.randn(2, 1, 3, 3, generator=_gen(1), dtype=torch.float64)
    noise = torch.randn(2, 1, 3, 3, generator=_gen(2), dtype=torch.float64)
    out = ddgan_posterior_sample(s, x0, x_tp1, torch.tensor([0, 2]), noise)
    assert torch.allclose(out[0], x0[0], atol=1e-14)  # coef1[0] = 1, coef2[0] = 0, no noise
    mean = ddgan_posterior_sample(s, x0, x_tp1, torch.tensor([0, 2]), None)
    assert not torch.allclose(out[1], mean[1])


def test_ddgan_sample_calls_network_t_times_descending():
    T, nz, shape = 4, 5, (3, 2, 4, 4)
    s = ddgan_schedule(T)
    calls = []
    target = torch.full(shape, 0.25)

    def net(x, t, z):
        calls.append((x.shape, t.clone(), z.shape))
        return target  # a generator that always knows x0

    out = ddgan_sample(net, s, shape, nz, rng=_gen(0))
    assert [c[1].tolist() for c in calls] == [[i] * 3 for i in range(T - 1, -1, -1)]
    assert all(c[1].dtype == torch.int64 for c in calls)
    assert all(c[0] == shape and c[2] == (3, nz) for c in calls)
    assert torch.allclose(out, target, atol=1e-6)  # the last step (t = 0) returns x0 exactly


def test_ddgan_sample_per_sample_rng_is_layout_independent():
    s = ddgan_schedule(4)
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(2, 2, 3, padding=1)
    lin = torch.nn.Linear(6, 2)

    def net(x, t, z):
        return torch.tanh(conv(x) + lin(z).reshape(-1, 2, 1, 1) + t.reshape(-1, 1, 1, 1).float())

    with torch.no_grad():
        batch = ddgan_sample(net, s, (4, 2, 4, 4), 6, rng=per_sample_generators([1, 2, 3, 4]))
        alone = ddgan_sample(net, s, (1, 2, 4, 4), 6, rng=per_sample_generators([3]))
    assert torch.allclose(batch[2], alone[0], atol=1e-6, rtol=0)
    assert not torch.allclose(batch[0], batch[1])
