"""Fréchet distance between two Gaussians fitted to feature sets.

d^2 = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)). The name of the number depends on the feature
network: with the TF-2015-12-05 Inception pool3 features it is FID; with any other network (the
MNIST classifier) it is reported under another name (FD-MNIST), never as FID.

Two independent computations are provided so that each score can be held against the other: a
symmetric eigendecomposition (below), and torchmetrics' `FrechetInceptionDistance` fed with the same
sufficient statistics; the tests also hold both against the textbook formula with scipy's `sqrtm`.
"""

from __future__ import annotations

import numpy as np
import torch

from distdiff.eval.stats import FeatureStats

def _trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr((S1 S2)^(1/2)) for symmetric positive semi-definite S1, S2.

    S1 S2 is similar to the symmetric matrix S1^(1/2) S2 S1^(1/2) (conjugate by S1^(1/2)), so its
    eigenvalues are real and non-negative and the trace of its square root is the sum of their roots.
    Two symmetric eigendecompositions cost a few seconds at D = 2048 where scipy's general `sqrtm`
    of the product costs about half a minute on two CPU cores; the value is the same up to rounding,
    and a singular covariance (fewer samples than dimensions) needs no diagonal offset.
    """
    w, v = np.linalg.eigh(sigma1)
    root1 = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T  # S1^(1/2); rounding can leave eigenvalues of -1e-17
    middle = root1 @ sigma2 @ root1
    eigenvalues = np.linalg.eigvalsh((middle + middle.T) / 2.0)
    return float(np.sqrt(np.clip(eigenvalues, 0.0, None)).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance of N(mu1, sigma1) and N(mu2, sigma2).

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
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * _trace_sqrt_product(sigma1, sigma2))


def frechet_distance_from_stats(a: FeatureStats, b: FeatureStats) -> float:
    """Fréchet distance of the Gaussian fits of two statistics (`frechet_distance`).

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
