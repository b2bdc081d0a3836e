"""Tests of the DDPM/DDIM math: schedules, q_sample, posterior, steps, samplers, RNG layout."""

import math
import subprocess
import sys

import pytest
import torch

from distdiff.diffusion import (
    Schedule,
    classifier_free_guidance,
    ddim_sample,
    ddim_timesteps,
    ddpm_sample,
    ddpm_schedule,
    ddpm_step,
    extract,
    per_sample_generators,
    posterior_mean_variance,
    predict_eps_from_x0,
    predict_x0_from_eps,
    q_sample,
    randint,
    randn,
)
from distdiff.tasks.ldm import ddpm_loss

TABLES = [
    "betas", "alphas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
    "posterior_mean_coef1", "posterior_mean_coef2",
]


def _gen(seed):
    g = torch.Generator()
    g.manual_seed(seed)
    return g


pytestmark = pytest.mark.usefixtures("one_thread")


def _full_t(value, batch):
    return torch.full((batch,), value, dtype=torch.int64)


# ---------------------------------------------------------------- schedules


def test_linear_schedule_pinned_betas_and_tables():
    s = ddpm_schedule(1000, 1e-4, 0.02)
    for i in (0, 1, 500, 999):
        expected = 1e-4 + i * (0.02 - 1e-4) / 999
        assert s.betas[i].item() == pytest.approx(expected, rel=1e-12, abs=0)
    assert s.num_steps == 1000
    for name in TABLES:
        table = getattr(s, name)
        assert table.dtype == torch.float64, name
        assert table.shape == (1000,), name
    assert s.alphas_cumprod_prev[0].item() == 1.0
    assert torch.equal(s.alphas_cumprod_prev[1:], s.alphas_cumprod[:-1])
    manual_abar = 1.0
    for i in range(10):
        manual_abar *= 1.0 - (1e-4 + i * (0.02 - 1e-4) / 999)
    assert s.alphas_cumprod[9].item() == pytest.approx(manual_abar, rel=1e-12)
    assert s.posterior_variance[0].item() == 0.0
    assert torch.isfinite(s.posterior_log_variance_clipped).all()


def test_cosine_schedule_matches_its_alpha_bar():
    T, off = 100, 0.008
    s = ddpm_schedule(T, kind="cosine")

    def f(u):
        return math.cos((u + off) / (1 + off) * math.pi / 2) ** 2

    for i in (0, 10, 50, 90):  # away from the 0.999 clip at the very end
        assert s.alphas_cumprod[i].item() == pytest.approx(f((i + 1) / T) / f(0.0), rel=1e-10)
    assert s.betas.max().item() <= 0.999


def test_schedule_rejects_bad_input():
    with pytest.raises(ValueError, match="kind"):
        ddpm_schedule(10, kind="quadratic")
    with pytest.raises(ValueError, match="betas"):
        Schedule.from_betas(torch.tensor([0.1, 1.5]))


def test_extract_shape_dtype_and_values():
    s = ddpm_schedule(10)
    x = torch.zeros(3, 2, 4, 4, dtype=torch.float32)
    t = torch.tensor([0, 4, 9])
    out = extract(s.betas, t, x)
    assert out.shape == (3, 1, 1, 1) and out.dtype == torch.float32
    assert torch.equal(out.flatten(), s.betas[t].float())
    with pytest.raises(ValueError, match="shape"):
        extract(s.betas, torch.tensor([0, 1]), x)


# ---------------------------------------------------------------- rng


def test_randn_per_sample_generators_stack_individual_draws():
    gens = per_sample_generators([3, 7, 11])
    out = randn((3, 2, 5), gens)
    for i, seed in enumerate([3, 7, 11]):
        assert torch.equal(out[i], torch.randn((2, 5), generator=_gen(seed)))
    with pytest.raises(ValueError, match="per-sample generators"):
        randn((2, 4), per_sample_generators([1, 2, 3]))
    ts = randint(50, 3, per_sample_generators([3, 7, 11]))
    assert ts.dtype == torch.int64 and ts.shape == (3,)
    assert ts[1].item() == torch.randint(0, 50, (1,), generator=_gen(7)).item()


def test_randn_single_generator_is_reproducible():
    a = randn((4, 3), _gen(5), dtype=torch.float64)
    b = randn((4, 3), _gen(5), dtype=torch.float64)
    assert torch.equal(a, b) and a.dtype == torch.float64


# ---------------------------------------------------------------- q_sample and posterior


def test_q_sample_empirical_mean_and_variance():
    s = ddpm_schedule(1000)
    n = 200_000
    x0 = torch.tensor([-1.0, 0.5, 2.0], dtype=torch.float64).reshape(1, 3, 1, 1).expand(n, 3, 1, 1)
    for step in (0, 100, 999):
        t = _full_t(step, n)
        x_t = q_sample(s, x0, t, torch.randn(x0.shape, generator=_gen(step), dtype=torch.float64))
        abar = s.alphas_cumprod[step].item()
        expected_mean = math.sqrt(abar) * x0[0].flatten()
        sd = math.sqrt(1 - abar)
        assert torch.allclose(x_t.mean(0).flatten(), expected_mean, atol=5 * sd / math.sqrt(n))
        assert torch.allclose(x_t.var(0).flatten(), torch.full((3,), 1 - abar, dtype=torch.float64), rtol=0.02)


def test_eps_and_x0_predictions_invert_q_sample():
    s = ddpm_schedule(100)
    g = _gen(0)
    x0 = torch.randn(4, 2, 3, 3, generator=g, dtype=torch.float64)
    eps = torch.randn(4, 2, 3, 3, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 10, 50, 99])
    x_t = q_sample(s, x0, t, eps)
    assert torch.allclose(predict_x0_from_eps(s, x_t, t, eps), x0, atol=1e-10)
    assert torch.allclose(predict_eps_from_x0(s, x_t, t, x0), eps, atol=1e-10)


def _conditional_gaussian(abar_prev, alpha, beta, x0, x_t):
    """Condition the joint Gaussian of (x_{t-1}, x_t) given x0 on x_t, by the generic formula."""
    # x_{t-1} = sqrt(abar_prev) x0 + sqrt(1 - abar_prev) e1 ; x_t = sqrt(alpha) x_{t-1} + sqrt(beta) e2
    mu = torch.tensor([math.sqrt(abar_prev) * x0, math.sqrt(alpha * abar_prev) * x0], dtype=torch.float64)
    A = torch.tensor([[math.sqrt(1 - abar_prev), 0.0],
                      [math.sqrt(alpha) * math.sqrt(1 - abar_prev), math.sqrt(beta)]], dtype=torch.float64)
    cov = A @ A.T
    mean = mu[0] + cov[0, 1] / cov[1, 1] * (x_t - mu[1])
    var = cov[0, 0] - cov[0, 1] ** 2 / cov[1, 1]
    return mean.item(), var.item()


def test_posterior_matches_gaussian_conditioning():
    s = ddpm_schedule(1000)
    x0_val, x_t_val = 0.7, -0.3
    for step in (1, 2, 250, 999):
        mean_ref, var_ref = _conditional_gaussian(
            s.alphas_cumprod_prev[step].item(), s.alphas[step].item(), s.betas[step].item(), x0_val, x_t_val
        )
        x0 = torch.full((1, 1, 1, 1), x0_val, dtype=torch.float64)
        x_t = torch.full((1, 1, 1, 1), x_t_val, dtype=torch.float64)
        mean, var, log_var = posterior_mean_variance(s, x0, x_t, _full_t(step, 1))
        assert mean.item() == pytest.approx(mean_ref, rel=1e-9, abs=1e-12)
        assert var.item() == pytest.approx(var_ref, rel=1e-9)
        assert log_var.item() == pytest.approx(math.log(var_ref), rel=1e-9)


# ---------------------------------------------------------------- ddpm_step


def test_ddpm_step_at_t0_with_true_noise_returns_x0_exactly():
    s = ddpm_schedule(1000)
    g = _gen(1)
    x0 = torch.randn(3, 1, 4, 4, generator=g, dtype=torch.float64)
    eps = torch.randn(3, 1, 4, 4, generator=g, dtype=torch.float64)
    t = _full_t(0, 3)
    x_t = q_sample(s, x0, t, eps)
    noise = torch.randn(3, 1, 4, 4, generator=g, dtype=torch.float64)
    for variance in ("beta", "posterior"):
        out = ddpm_step(s, eps, x_t, t, noise, variance=variance)  # noise must be ignored at t = 0
        assert torch.allclose(out, x0, atol=1e-12, rtol=0)


def test_ddpm_step_noise_only_where_t_positive_and_variance_choices():
    s = ddpm_schedule(1000)
    g = _gen(2)
    x_t = torch.randn(2, 1, 2, 2, generator=g, dtype=torch.float64)
    eps = torch.randn(2, 1, 2, 2, generator=g, dtype=torch.float64)
    noise = torch.randn(2, 1, 2, 2, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 300])
    mean = ddpm_step(s, eps, x_t, t, None)
    for variance, table in (("beta", s.betas), ("posterior", s.posterior_variance)):
        out = ddpm_step(s, eps, x_t, t, noise, variance=variance)
        assert torch.equal(out[0], mean[0])
        assert torch.allclose(out[1] - mean[1], math.sqrt(table[300].item()) * noise[1], atol=1e-12)
    with pytest.raises(ValueError, match="variance"):
        ddpm_step(s, eps, x_t, t, noise, variance="learned")


def test_ddpm_step_mean_is_posterior_mean_of_predicted_x0():
    s = ddpm_schedule(200)
    g = _gen(3)
    x_t = torch.randn(4, 2, 3, 3, generator=g, dtype=torch.float64)
    eps = torch.randn(4, 2, 3, 3, generator=g, dtype=torch.float64)
    t = torch.tensor([1, 20, 100, 199])
    x0_hat = predict_x0_from_eps(s, x_t, t, eps)
    post_mean, _, _ = posterior_mean_variance(s, x0_hat, x_t, t)
    assert torch.allclose(ddpm_step(s, eps, x_t, t, None), post_mean, atol=1e-10)


# ---------------------------------------------------------------- ddpm_loss


def test_ddpm_loss_matches_manual_and_draws_from_generator():
    s = ddpm_schedule(100)
    g = _gen(4)
    x0 = torch.randn(5, 2, 4, 4, generator=g)
    t = torch.tensor([0, 3, 50, 70, 99])
    noise = torch.randn(5, 2, 4, 4, generator=g)
    seen = {}

    def model(x_t, t, scale):
        seen["x_t"], seen["t"] = x_t, t
        return scale * x_t

    loss = ddpm_loss(model, s, x0, t=t, noise=noise, model_kwargs={"scale": 0.5})
    x_t = q_sample(s, x0, t, noise)
    assert torch.allclose(seen["x_t"], x_t) and torch.equal(seen["t"], t)
    assert loss.shape == () and loss.item() == pytest.approx(((0.5 * x_t - noise) ** 2).mean().item(), rel=1e-6)

    oracle = lambda x_t, t: predict_eps_from_x0(s, x_t, t, x0)  # noqa: E731 - knows the answer
    assert ddpm_loss(oracle, s, x0, generator=_gen(9)).item() < 1e-8
    zero = lambda x_t, t: torch.zeros_like(x_t)  # noqa: E731
    a = ddpm_loss(zero, s, x0, generator=_gen(9))
    b = ddpm_loss(zero, s, x0, generator=_gen(9))
    assert a.item() == b.item()
    g9 = _gen(9)
    randint(100, 5, g9)  # t is drawn first, then the noise
    assert a.item() == pytest.approx(randn(x0.shape, g9).pow(2).mean().item(), rel=1e-6)


# ---------------------------------------------------------------- samplers on a Gaussian "data set"

MU, SD = 1.5, 0.5


def _oracle_eps(schedule):
    """Exact E[eps | x_t] for data x0 ~ N(MU, SD^2): linear in x_t."""

    def model(x_t, t):
        abar = extract(schedule.alphas_cumprod, t, x_t)
        return (1 - abar).sqrt() / (abar * SD**2 + 1 - abar) * (x_t - abar.sqrt() * MU)

    return model


def test_ddpm_sample_with_oracle_matches_data_distribution():
    s = ddpm_schedule(1000)
    n = 20_000
    for variance in ("beta", "posterior"):
        x = ddpm_sample(_oracle_eps(s), s, (n, 1, 1, 1), generator=_gen(5), dtype=torch.float64, variance=variance)
        assert x.shape == (n, 1, 1, 1)
        assert x.mean().item() == pytest.approx(MU, abs=0.02)
        assert x.std().item() == pytest.approx(SD, abs=0.02)


def test_ddim_sample_with_oracle_matches_data_distribution():
    # Few-step DDIM shrinks the variance of a Gaussian (discretisation error), so this uses
    # enough steps for the error to fall well inside the tolerance.
    s = ddpm_schedule(1000)
    n = 40_000
    for eta, steps in ((0.0, 200), (1.0, 1000)):
        x = ddim_sample(_oracle_eps(s), s, (n, 1, 1, 1), steps=steps, eta=eta, generator=_gen(6), dtype=torch.float64)
        assert x.mean().item() == pytest.approx(MU, abs=0.025)
        assert x.std().item() == pytest.approx(SD, abs=0.025)


def test_ddim_eta0_follows_the_exact_probability_flow_map():
    # For Gaussian data the probability-flow ODE maps x_T ~ N(sqrt(abar) MU, abar SD^2 + 1 - abar)
    # affinely onto N(MU, SD^2); deterministic DDIM must converge to that map per sample.
    s = ddpm_schedule(1000)
    x_T = torch.linspace(-3, 3, 13, dtype=torch.float64).reshape(-1, 1, 1, 1)
    abar = s.alphas_cumprod[-1].item()
    exact = MU + SD * (x_T - math.sqrt(abar) * MU) / math.sqrt(abar * SD**2 + 1 - abar)
    x = ddim_sample(_oracle_eps(s), s, x_T.shape, steps=1000, eta=0.0, x_T=x_T, dtype=torch.float64)
    assert torch.allclose(x, exact, atol=0.01)


def test_ddim_eta0_is_deterministic_given_x_T():
    s = ddpm_schedule(100)
    x_T = torch.randn(4, 1, 2, 2, generator=_gen(7), dtype=torch.float64)
    a = ddim_sample(_oracle_eps(s), s, x_T.shape, steps=10, eta=0.0, generator=_gen(1), x_T=x_T, dtype=torch.float64)
    b = ddim_sample(_oracle_eps(s), s, x_T.shape, steps=10, eta=0.0, generator=_gen(2), x_T=x_T, dtype=torch.float64)
    assert torch.equal(a, b)
    c = ddim_sample(_oracle_eps(s), s, x_T.shape, steps=10, eta=1.0, generator=_gen(1), x_T=x_T, dtype=torch.float64)
    d = ddim_sample(_oracle_eps(s), s, x_T.shape, steps=10, eta=1.0, generator=_gen(2), x_T=x_T, dtype=torch.float64)
    assert not torch.allclose(c, d)


def test_ddim_full_steps_eta1_equals_ddpm_posterior_variance():
    s = ddpm_schedule(50)
    model = _oracle_eps(s)
    shape = (6, 1, 2, 2)
    a = ddim_sample(model, s, shape, steps=50, eta=1.0, generator=_gen(8), dtype=torch.float64)
    b = ddpm_sample(model, s, shape, generator=_gen(8), dtype=torch.float64, variance="posterior")
    assert torch.allclose(a, b, atol=1e-9)


def test_ddim_timesteps_even_and_bounded():
    seq = ddim_timesteps(1000, 50)
    assert len(seq) == 50 and seq[0] == 999 and seq[-1] == 0
    gaps = [a - b for a, b in zip(seq, seq[1:])]
    assert max(gaps) - min(gaps) <= 1
    assert ddim_timesteps(10, 10) == list(range(9, -1, -1))
    assert ddim_timesteps(10, 1) == [9]
    with pytest.raises(ValueError, match="steps"):
        ddim_timesteps(10, 11)


def test_sampler_calls_model_with_descending_int64_t():
    s = ddpm_schedule(7)
    calls = []

    def model(x_t, t):
        calls.append(t.clone())
        return torch.zeros_like(x_t)

    ddpm_sample(model, s, (2, 1, 1, 1), generator=_gen(0))
    assert [c[0].item() for c in calls] == list(range(6, -1, -1))
    assert all(c.dtype == torch.int64 and c.shape == (2,) for c in calls)


class _TinyEps(torch.nn.Module):
    """A per-sample network (no batch statistics), so batch layout must not matter."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(2, 2, 3, padding=1)

    def forward(self, x_t, t):
        return torch.tanh(self.conv(x_t)) * (1 + t.float().reshape(-1, 1, 1, 1) / 10)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_samples_do_not_depend_on_batch_composition(sampler):
    s = ddpm_schedule(20)
    net = _TinyEps()
    seeds = [10, 11, 12, 13]

    def run(seed_list):
        gens = per_sample_generators(seed_list)
        shape = (len(seed_list), 2, 4, 4)
        if sampler == "ddpm":
            return ddpm_sample(net, s, shape, generator=gens)
        return ddim_sample(net, s, shape, steps=5, eta=1.0, generator=gens)

    batch = run(seeds)
    alone = run([12])
    assert torch.allclose(batch[2], alone[0], atol=1e-6, rtol=0)
    reordered = run([13, 12])
    assert torch.allclose(batch[3], reordered[0], atol=1e-6, rtol=0)
    assert not torch.allclose(batch[0], batch[1])


# ---------------------------------------------------------------- classifier-free guidance


def test_classifier_free_guidance_combines_in_one_forward():
    calls = []
    null = 10

    def model(x_t, t, y):
        calls.append(x_t.shape[0])
        return x_t + y.to(x_t.dtype).reshape(-1, 1, 1, 1)

    x = torch.randn(3, 1, 2, 2, generator=_gen(0))
    t = torch.tensor([1, 2, 3])
    y = torch.tensor([0, 4, 7])
    for w in (0.0, 1.0, 3.0):
        out = classifier_free_guidance(model, w, null)(x, t, y=y)
        expected = (x + null) + w * (y.float().reshape(-1, 1, 1, 1) - null)
        assert torch.allclose(out, expected, atol=1e-5)
    assert calls == [6, 6, 6]


# ---------------------------------------------------------------- import hygiene


def test_diffusion_and_losses_import_torch_only():
    code = (
        "import sys, distdiff.diffusion, distdiff.losses\n"
        "bad = [m for m in ('ray', 'deepspeed', 'webdataset', 'boto3') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(__import__("pathlib").Path(__file__).parents[1]))


def test_progress_bar_runs(capsys):
    s = ddpm_schedule(3)
    zero = lambda x_t, t: torch.zeros_like(x_t)  # noqa: E731
    x = ddpm_sample(zero, s, (1, 1, 2, 2), generator=_gen(0), progress=True)
    y = ddim_sample(zero, s, (1, 1, 2, 2), steps=2, generator=_gen(0), progress=True)
    assert x.shape == y.shape == (1, 1, 2, 2)
    assert "ddpm" in capsys.readouterr().err
