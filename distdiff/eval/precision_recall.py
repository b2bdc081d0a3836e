"""Improved precision and recall (Kynkäänniemi et al., 2019) from k-nearest-neighbour manifolds.

Each feature set approximates its manifold by the union of balls centred on its points, each ball
reaching that point's k-th nearest neighbour in the same set. Precision is the fraction of generated
points inside the real manifold; recall the fraction of real points inside the generated manifold.
The paper uses k = 3.
"""

from __future__ import annotations

import torch

DEFAULT_K = 3


def _pairwise_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distances between the rows of a (N, D) and b (M, D): (N, M)."""
    return torch.cdist(a, b)


def knn_radii(features: torch.Tensor, k: int = DEFAULT_K, chunk: int = 1024) -> torch.Tensor:
    """Distance from each point to its k-th nearest other point of the same set.

    Args:
        features: (N, D) feature vectors, N > k.
        k: which neighbour (the point itself is not counted).
        chunk: rows processed at once, to bound memory at chunk * N distances.

    Returns:
        (N,) radii.
    """
    n = features.shape[0]
    if n <= k:
        raise ValueError(f"k-NN radii with k={k} need more than {k} points, got {n}")
    radii = []
    for start in range(0, n, chunk):
        dist = _pairwise_distances(features[start : start + chunk], features)  # (c, N)
        # The k+1 smallest include the point itself at distance 0.
        radii.append(dist.topk(k + 1, dim=1, largest=False).values[:, k])
    return torch.cat(radii)


def fraction_inside(queries: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int = 1024) -> float:
    """Fraction of query points that lie in at least one ball (centre, radius).

    Args:
        queries: (Q, D) points to test.
        centres: (N, D) ball centres.
        radii: (N,) ball radii.
        chunk: query rows processed at once.

    Returns:
        a float in [0, 1].
    """
    inside = 0
    for start in range(0, queries.shape[0], chunk):
        dist = _pairwise_distances(queries[start : start + chunk], centres)  # (c, N)
        inside += int((dist <= radii.unsqueeze(0)).any(dim=1).sum())
    return inside / queries.shape[0]


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = DEFAULT_K) -> dict[str, float]:
    """Improved precision and recall of generated features against real ones.

    Args:
        real: (N, D) reference features.
        fake: (M, D) generated features.
        k: neighbourhood size (3 in the paper).

    Returns:
        {"precision": float, "recall": float}.
    """
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"feature sets must be (N, D) with the same D, got {tuple(real.shape)} and {tuple(fake.shape)}")
    real, fake = real.float(), fake.float()
    precision = fraction_inside(fake, real, knn_radii(real, k))
    recall = fraction_inside(real, fake, knn_radii(fake, k))
    return {"precision": precision, "recall": recall}
