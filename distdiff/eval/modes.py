"""Stacked-MNIST mode coverage: how many of the 1000 digit triples a generator produces.

Each generated (3, 32, 32) image is read as three digits (R, G, B channels) by the MNIST
classifier, giving mode 100 * r + 10 * g + b. The histogram over modes is a sum, so it reduces
across workers like the feature statistics. From it: the number of modes covered (at least
`min_count` samples) and the reverse KL divergence KL(p_generated || uniform over 1000 modes),
the two numbers the DDGAN paper reports for Stacked MNIST.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from distdiff.eval.classifier import MnistClassifier, predict_digits

NUM_STACKED_MODES = 1000


def stacked_mnist_modes(classifier: MnistClassifier, images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Mode index of each Stacked-MNIST image.

    Args:
        classifier: a trained MNIST classifier.
        images: uint8 (N, 3, 32, 32).

    Returns:
        int64 (N,) modes in [0, 1000).
    """
    images = torch.as_tensor(images)
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"Stacked MNIST images are (N, 3, H, W), got {tuple(images.shape)}")
    n = images.shape[0]
    # Classify all channels as one batch of single-channel digits: (N*3, 1, H, W).
    digits = predict_digits(classifier, images.reshape(n * 3, 1, *images.shape[2:])).reshape(n, 3)
    return digits[:, 0] * 100 + digits[:, 1] * 10 + digits[:, 2]


def mode_histogram(modes: torch.Tensor, num_modes: int = NUM_STACKED_MODES) -> torch.Tensor:
    """Count of samples per mode.

    Args:
        modes: int64 (N,) mode indices.
        num_modes: histogram length.

    Returns:
        float64 (num_modes,) counts (float64 so it reduces with the other statistics).
    """
    return torch.bincount(modes.to(torch.long), minlength=num_modes).to(torch.float64)


def mode_coverage(histogram: torch.Tensor | np.ndarray, min_count: int = 1) -> dict[str, float]:
    """Modes covered and reverse KL to the uniform distribution over all modes.

    Args:
        histogram: (M,) sample counts per mode.
        min_count: a mode counts as covered with at least this many samples.

    Returns:
        {"modes": int, "num_modes": int, "reverse_kl": float, "num_samples": int}.
    """
    counts = np.asarray(torch.as_tensor(histogram, dtype=torch.float64))
    total = counts.sum()
    if total <= 0:
        raise ValueError("the mode histogram is empty: no samples were classified")
    p = counts / total
    nonzero = p[p > 0]
    # KL(p || u) = sum p log(p / (1/M)) = sum p log p + log M; zero-probability modes add nothing.
    reverse_kl = float((nonzero * np.log(nonzero)).sum() + math.log(len(counts)))
    return {
        "modes": int((counts >= min_count).sum()),
        "num_modes": int(len(counts)),
        "reverse_kl": reverse_kl,
        "num_samples": int(round(total)),
    }
