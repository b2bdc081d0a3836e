"""What each worker gathers from its share of images, and the one sum-reduction that merges it.

Everything is a sum over images, so it merges across workers by element-wise addition:
- float64 feature statistics (count, sum, sum of outer products);
- the features of images with global index < `pr_count`, written into a zero-filled
  (pr_count, D) buffer at their own row: the sum over workers is the gathered feature set, in
  index order whatever the split (x + 0 is exact);
- likewise the first `grid_count` uint8 images, for the sample grid;
- the Stacked-MNIST mode histogram;
- seconds spent generating and extracting features.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from distdiff.eval.modes import mode_histogram, num_digit_modes, stacked_mnist_modes
from distdiff.eval.reference import rank_batches_of
from distdiff.eval.sources import sample_seed
from distdiff.eval.stats import FeatureStats, ReduceSum
from distdiff.images import quantize_to_uint8


@dataclass
class Accumulator:
    """Sums over one worker's images (see module docstring)."""

    stats: FeatureStats
    pr_features: torch.Tensor  # (pr_count, D) float32, rows of other workers' images are zero
    grid: torch.Tensor  # (grid_count, C, H, W) float32 pixel values 0..255 (exact integers)
    modes: torch.Tensor | None  # (1000,) float64 for Stacked MNIST, (10,) for MNIST, or None
    seconds: torch.Tensor  # (2,) float64: generation, feature extraction

    @classmethod
    def empty(cls, dim: int, image_shape: Sequence[int], pr_count: int, grid_count: int,
              with_modes: bool, device: str | torch.device = "cpu") -> "Accumulator":
        return cls(
            FeatureStats.empty(dim, device),
            torch.zeros(pr_count, dim, dtype=torch.float32),
            torch.zeros(grid_count, *image_shape, dtype=torch.float32),
            torch.zeros(num_digit_modes(image_shape), dtype=torch.float64) if with_modes else None,
            torch.zeros(2, dtype=torch.float64),
        )

    def add(self, indices: torch.Tensor, images: torch.Tensor, features: torch.Tensor,
            modes: torch.Tensor | None) -> None:
        """Add one batch: global indices int64 (B,), uint8 images (B, C, H, W), features (B, D)."""
        self.stats.add(features)
        keep = indices < self.pr_features.shape[0]
        self.pr_features[indices[keep]] = features[keep.to(features.device)].float().cpu()
        keep = indices < self.grid.shape[0]
        self.grid[indices[keep]] = images[keep].float()
        if self.modes is not None and modes is not None:
            self.modes += mode_histogram(modes.cpu(), len(self.modes))

    def all_reduced(self, reduce_sum: ReduceSum) -> "Accumulator":
        """The sums over all workers (every worker calls this, in the same order)."""
        return Accumulator(
            self.stats.all_reduced(reduce_sum),
            reduce_sum(self.pr_features),
            reduce_sum(self.grid),
            reduce_sum(self.modes) if self.modes is not None else None,
            reduce_sum(self.seconds),
        )

    def grid_uint8(self) -> torch.Tensor:
        """The gathered grid images as uint8 (n, C, H, W)."""
        return self.grid.round().clamp(0, 255).to(torch.uint8)


def generated_batches(source, num_samples: int, rank: int, world_size: int, batch_size: int,
                      base_seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, float]]:
    """This rank's generated images: (indices (B,), uint8 (B, C, H, W), seconds spent generating).

    Batch j of the global index range goes to rank j mod world_size; sample i is drawn from
    `sample_seed(base_seed, i)` alone, so the images do not depend on the split. A source with a
    `warm_up` method gets one untimed call at the batch size first, so that the seconds measure its
    steady speed (kernel preparation on first use would otherwise weigh on few-step samplers alone).
    """
    if hasattr(source, "warm_up"):
        source.warm_up(batch_size)
    for idx in rank_batches_of(num_samples, rank, world_size, batch_size):
        indices = list(idx)
        start = time.perf_counter()
        images = source.generate(indices, [sample_seed(base_seed, i) for i in indices])  # (B, C, H, W)
        images = quantize_to_uint8(images.cpu())
        seconds = time.perf_counter() - start
        if tuple(images.shape[1:]) != tuple(source.image_shape):
            raise ValueError(f"source {source.key} produced images of shape {tuple(images.shape[1:])}, "
                             f"announced {tuple(source.image_shape)}")
        yield torch.tensor(indices, dtype=torch.long), images, seconds


def accumulate(batches, extractor, image_shape: Sequence[int], pr_count: int, grid_count: int,
               classifier=None, device: str | torch.device = "cpu", progress: str | None = None,
               total: int | None = None) -> Accumulator:
    """Run the extractor (and mode classifier) over this worker's batches.

    Args:
        batches: iterable of (indices (B,), uint8 images (B, C, H, W), generation seconds).
        extractor: a feature extractor.
        image_shape: (C, H, W) of every image.
        pr_count: gather the features of global indices below this (precision/recall).
        grid_count: gather the images of global indices below this (sample grid).
        classifier: an MNIST classifier for Stacked-MNIST modes, or None.
        device: where the feature statistics accumulate.
        progress: a progress-bar title (None: no bar).
        total: images this worker will see, for the bar.

    Returns:
        this worker's (not yet reduced) accumulator.
    """
    from distdiff.console import progress_bar

    acc = Accumulator.empty(extractor.feature_dim, image_shape, pr_count, grid_count, classifier is not None, device)
    bar = progress_bar(total=total, desc=progress, unit="img", disable=progress is None)
    for indices, images, gen_seconds in batches:
        start = time.perf_counter()
        features = extractor(images)  # (B, D), on the extractor's device
        if features.is_cuda:
            torch.cuda.synchronize(features.device)  # so the time below is the extractor's
        acc.seconds[1] += time.perf_counter() - start
        acc.seconds[0] += gen_seconds
        modes = stacked_mnist_modes(classifier, images) if classifier is not None else None
        acc.add(indices, images, features, modes)
        bar.update(len(indices))
    bar.close()
    return acc
