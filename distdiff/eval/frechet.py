"""Fréchet distance between two Gaussians fitted to feature sets.

d^2 = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)). The name of the number depends on the feature
network: with the TF-2015-12-05 Inception pool3 features it is FID; with any other network (the
MNIST classifier) it is reported under another name (FD-MNIST), never as FID.

Two independent computations are provided so a test can hold them against each other: scipy's
`sqrtm`, and torchmetrics' `FrechetInceptionDistance` fed with the same sufficient statistics.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg
import torch

from distdiff.eval.stats import FeatureStats

# A diagonal offset for the rare case where S1 S2 is singular enough for sqrtm to return inf/nan.
_SQRTM_RETRY_EPS = 1e-6


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance of N(mu1, sigma1) and N(mu2, sigma2), with scipy's matrix square root.

    Args:
        mu1, mu2: (D,) means.
        sigma1, sigma2: (D, D) covariances.

    Returns:
        the squared Fréchet distance as a Python float.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(
            f"mismatched Gaussians: means {mu1.shape} vs {mu2.shape}, covariances {sigma1.shape} vs {sigma2.shape}"
        )
    with warnings.catch_warnings():
        # Fewer samples than dimensions make the covariances singular; sqrtm warns but its result
        # stays accurate, and a non-finite one is caught below.
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            # Near-singular product: shift both covariances slightly, as the reference FID code does.
            offset = np.eye(sigma1.shape[0]) * _SQRTM_RETRY_EPS
            covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    # Rounding can leave a tiny imaginary part on a matrix whose true root is real.
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def frechet_distance_from_stats(a: FeatureStats, b: FeatureStats) -> float:
    """Fréchet distance of the Gaussian fits of two statistics (scipy path).

    Args:
        a, b: feature statistics of the same dimension, each of at least 2 vectors.

    Returns:
        the squared Fréchet distance.
    """
    if a.dim != b.dim:
        raise ValueError(f"feature dimensions differ: {a.dim} vs {b.dim} (different feature networks?)")
    return frechet_distance(*a.mean_cov(), *b.mean_cov())


class _FeatureCountOnly(torch.nn.Module):
    """Stand-in network that only tells torchmetrics the feature dimension; never called."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - never used
        raise RuntimeError("features are supplied as statistics, not images")


def frechet_distance_torchmetrics(real: FeatureStats, fake: FeatureStats) -> float:
    """Fréchet distance computed by torchmetrics' FID metric from the same sufficient statistics.

    torchmetrics keeps exactly (count, sum, sum of outer products) in float64 as its metric state,
    so the statistics are loaded into that state and its own `compute` does the rest.

    Args:
        real, fake: feature statistics of the same dimension.

    Returns:
        the squared Fréchet distance.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance

    if real.dim != fake.dim:
        raise ValueError(f"feature dimensions differ: {real.dim} vs {fake.dim}")
    # sync_on_compute=False: the statistics are already global; inside a process group torchmetrics
    # would otherwise try to all-gather them again (and hang, as only rank 0 computes).
    metric = FrechetInceptionDistance(feature=_FeatureCountOnly(real.dim), sync_on_compute=False)
    metric.real_features_sum = real.total.clone()
    metric.real_features_cov_sum = real.outer.clone()
    metric.real_features_num_samples = torch.tensor(real.count, dtype=torch.long)
    metric.fake_features_sum = fake.total.clone()
    metric.fake_features_cov_sum = fake.outer.clone()
    metric.fake_features_num_samples = torch.tensor(fake.count, dtype=torch.long)
    metric.orig_dtype = torch.float64  # normally set by update(); keep the full precision
    metric._update_count = 1  # the state is filled, so compute() need not warn about no updates
    return float(metric.compute())
