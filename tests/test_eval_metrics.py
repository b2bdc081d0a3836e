"""Fréchet distance, sufficient statistics, precision/recall, mode coverage, quantisation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from distdiff.eval.frechet import frechet_distance, frechet_distance_from_stats, frechet_distance_torchmetrics
from distdiff.images import make_grid, quantize_to_uint8, save_grid
from distdiff.eval.modes import mode_coverage, mode_histogram
from distdiff.eval.precision_recall import knn_radii, precision_recall
from distdiff.eval.stats import FeatureStats, local_reduce_sum


def _features(n: int, d: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g, dtype=torch.float64) / math.sqrt(d)
    return torch.randn(n, d, generator=g, dtype=torch.float64) @ mix + shift


def _stats(x: torch.Tensor) -> FeatureStats:
    s = FeatureStats.empty(x.shape[1])
    s.add(x)
    return s


def _scipy_reference(a: np.ndarray, b: np.ndarray) -> float:
    """Textbook FID on raw features: np.mean/np.cov and scipy's sqrtm."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * root))


def test_frechet_matches_scipy_reference_and_torchmetrics():
    a, b = _features(400, 32, 0), _features(300, 32, 1, shift=0.3)
    sa, sb = _stats(a), _stats(b)
    expected = _scipy_reference(a.numpy(), b.numpy())
    assert expected > 1.0  # the sets differ, so the check below is not 0 == 0
    assert frechet_distance_from_stats(sa, sb) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance_torchmetrics(sa, sb) == pytest.approx(expected, rel=1e-6)


def test_frechet_with_fewer_samples_than_dimensions_matches_scipy_sqrtm():
    # As in the studies: a few hundred samples of 2048-dim Inception features give singular covariances.
    a, b = _features(60, 128, 5), _features(40, 128, 6, shift=0.2)
    expected = _scipy_reference(a.numpy(), b.numpy())
    assert frechet_distance_from_stats(_stats(a), _stats(b)) == pytest.approx(expected, rel=1e-7)


def test_frechet_closed_form_for_diagonal_gaussians():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    v1, v2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    # For commuting covariances Tr(S1 + S2 - 2 sqrt(S1 S2)) = sum (sqrt(v1) - sqrt(v2))^2.
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-12)


def test_self_distance_is_zero():
    s = _stats(_features(500, 64, 2))
    scale = float(torch.trace(torch.from_numpy(s.mean_cov()[1])))
    assert abs(frechet_distance_from_stats(s, s)) < 1e-8 * scale
    assert abs(frechet_distance_torchmetrics(s, s)) < 1e-6 * scale


def test_stats_split_and_merged_equal_whole():
    x = _features(257, 16, 3)
    whole = _stats(x)
    parts = _stats(x[:100]).merged(_stats(x[100:200])).merged(_stats(x[200:]))
    assert parts.count == whole.count == 257
    torch.testing.assert_close(parts.total, whole.total, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(parts.outer, whole.outer, rtol=1e-12, atol=1e-10)
    mu, sigma = whole.mean_cov()
    np.testing.assert_allclose(mu, x.numpy().mean(0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(x.numpy(), rowvar=False), rtol=1e-9, atol=1e-12)
    reduced = whole.all_reduced(local_reduce_sum)
    assert reduced.count == whole.count


def test_stats_save_load_roundtrip(tmp_path):
    s = _stats(_features(20, 5, 4))
    s.save(tmp_path / "s.npz")
    loaded = FeatureStats.load(tmp_path / "s.npz")
    assert loaded.count == 20 and torch.equal(loaded.outer, s.outer)


def test_stats_reject_wrong_dimension_and_tiny_sets():
    s = FeatureStats.empty(4)
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        s.add(torch.zeros(3, 5))
    s.add(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="at least 2"):
        s.mean_cov()


def _two_clusters(n: int, seed: int, which=(0, 1)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.0, 0.0], [50.0, 0.0]])
    pick = torch.tensor(which)[torch.randint(len(which), (n,), generator=g)]
    return centres[pick] + torch.randn(n, 2, generator=g)


def test_precision_recall_identical_sets_are_perfect():
    x = _two_clusters(300, 0)
    assert precision_recall(x, x.clone()) == {"precision": 1.0, "recall": 1.0}


def test_precision_recall_same_distribution_is_high():
    pr = precision_recall(_two_clusters(600, 0), _two_clusters(600, 1))
    assert pr["precision"] > 0.9 and pr["recall"] > 0.9


def test_precision_recall_disjoint_sets_are_zero():
    real = _two_clusters(200, 0)
    assert precision_recall(real, real + 1000.0) == {"precision": 0.0, "recall": 0.0}


def test_precision_recall_mode_dropping_keeps_precision_loses_recall():
    real = _two_clusters(800, 0)  # half the points in each cluster
    fake = _two_clusters(800, 1, which=(0,))  # only the first cluster
    pr = precision_recall(real, fake)
    assert pr["precision"] > 0.9
    assert 0.35 < pr["recall"] < 0.65


def test_knn_radii_excludes_the_point_itself():
    pts = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    torch.testing.assert_close(knn_radii(pts, k=1), torch.tensor([1.0, 1.0, 2.0, 4.0]))
    torch.testing.assert_close(knn_radii(pts, k=3), torch.tensor([7.0, 6.0, 4.0, 7.0]))


def test_mode_coverage_exact_counts():
    k = 137
    modes = torch.arange(k).repeat(5)  # exactly k modes, 5 samples each
    cov = mode_coverage(mode_histogram(modes))
    assert cov["modes"] == k and cov["num_samples"] == 5 * k
    assert cov["reverse_kl"] == pytest.approx(math.log(1000 / k), rel=1e-12)
    uniform = mode_coverage(mode_histogram(torch.arange(1000).repeat(2)))
    assert uniform["modes"] == 1000 and abs(uniform["reverse_kl"]) < 1e-12


def test_quantize_matches_png_and_inverts_the_data_mapping(tmp_path):
    from PIL import Image

    pixels = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    unit = pixels.float() / 127.5 - 1.0  # how distdiff maps stored pixels to model inputs
    assert torch.equal(quantize_to_uint8(unit), pixels)
    clamped = quantize_to_uint8(torch.tensor([[[[-3.0, 3.0]]]]))
    assert torch.equal(clamped, torch.tensor([[[[0, 255]]]], dtype=torch.uint8))
    noisy = torch.rand(4, 3, 8, 8) * 2.2 - 1.1
    q = quantize_to_uint8(noisy)
    path = save_grid(q, tmp_path / "g.png", nrow=2, scale=1)
    grid = np.asarray(Image.open(path))
    np.testing.assert_array_equal(grid, make_grid(q, nrow=2))  # PNG stores exactly these bytes
    np.testing.assert_array_equal(grid[2:10, 2:10], q[0].permute(1, 2, 0).numpy())


def test_eval_package_imports_neither_ray_nor_boto3():
    import subprocess
    import sys

    code = ("import sys, distdiff.eval, distdiff.eval.multiproc, distdiff.eval.cli, distdiff.eval.features\n"
            "bad = [m for m in ('ray', 'boto3', 'webdataset', 'deepspeed') if m in sys.modules]\n"
            "assert not bad, bad\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_probe_auc_is_the_mann_whitney_statistic():
    from distdiff.eval.gan_probe import auc

    # pairs (real, fake): 1>0, 1<2, 2>0, 2=2 (half) -> 2.5 of 4
    assert auc(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 2.0])) == 0.625
    assert auc(torch.tensor([3.0, 4.0]), torch.tensor([1.0, 2.0])) == 1.0
    assert auc(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])) == 0.0
    assert auc(torch.zeros(5), torch.zeros(7)) == 0.5  # a flat discriminator is at chance
