"""Digit-mode coverage: how many of the 1000 Stacked-MNIST digit triples (or 10 MNIST digits) a generator produces.

Each generated (3, 32, 32) image is read as three digits (R, G, B channels) by the MNIST
classifier, giving mode 100 * r + 10 * g + b; a (1, 32, 32) image is one digit, one of 10 modes.
The histogram over modes is a sum, so it reduces across workers like the feature statistics. From
it: the number of modes covered (at least `min_count` samples) and the reverse KL divergence
KL(p_generated || uniform over the modes), the two numbers the DDGAN paper reports for Stacked MNIST.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from distdiff.eval.classifier import MnistClassifier, predict_digits

NUM_STACKED_MODES = 1000


def num_digit_modes(image_shape) -> int | None:
    """Modes of digit images of this shape: 10 per channel combined (None when not digit-sized)."""
    channels, height, width = image_shape
    return 10 ** channels if channels in (1, 3) and (height, width) == (32, 32) else None


def stacked_mnist_modes(classifier: MnistClassifier, images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Mode index of each digit image: the classifier's digit per channel, read as a base-10 number.

    Args:
        classifier: a trained MNIST classifier.
        images: uint8 (N, 3, 32, 32) Stacked MNIST (modes in [0, 1000)) or (N, 1, 32, 32) MNIST ([0, 10)).

    Returns:
        int64 (N,) modes.
    """
    images = torch.as_tensor(images)
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"digit images are (N, 1 or 3, H, W), got {tuple(images.shape)}")
    n, c = images.shape[:2]
    # Classify all channels as one batch of single-channel digits: (N*C, 1, H, W).
    digits = predict_digits(classifier, images.reshape(n * c, 1, *images.shape[2:])).reshape(n, c)
    weights = 10 ** torch.arange(c - 1, -1, -1, device=digits.device)  # (100, 10, 1) or (1,)
    return (digits * weights).sum(dim=1)


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
