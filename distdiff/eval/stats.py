"""Float64 sufficient statistics of feature sets, and the sum-reduction they travel through.

A Gaussian fit of a feature set only needs (count, sum, sum of outer products). Those three add up
across workers, so each worker accumulates its own share and one element-wise sum over workers
gives exactly the statistics of the union: the result does not depend on how the samples were
split. Everything is kept in float64 because the covariance is a difference of two large sums.

The reduction is a plain callable `reduce_sum(tensor) -> tensor` returning the element-wise sum of
that tensor over all workers (every worker calls it with a tensor of the same shape and dtype, in
the same order). `local_reduce_sum` serves one process; `torch_distributed_reduce_sum` serves any
initialised `torch.distributed` group (gloo on CPU), which is also what the Ray job uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

ReduceSum = Callable[[torch.Tensor], torch.Tensor]


def local_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The sum over a world of one worker: the tensor itself.

    Args:
        tensor: any tensor.

    Returns:
        the same tensor.
    """
    return tensor


def torch_distributed_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a CPU tensor over the default `torch.distributed` process group.

    Args:
        tensor: the local contribution; not modified.

    Returns:
        a new tensor holding the sum over all ranks.
    """
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("torch_distributed_reduce_sum needs an initialised torch.distributed process group")
    out = tensor.detach().clone().contiguous()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


@dataclass
class FeatureStats:
    """Count, sum and sum of outer products of a set of D-dimensional feature vectors (float64)."""

    count: int
    total: torch.Tensor  # (D,) float64: sum of features
    outer: torch.Tensor  # (D, D) float64: sum of f f^T

    @classmethod
    def empty(cls, dim: int, device: str | torch.device = "cpu") -> "FeatureStats":
        """Statistics of no vectors.

        Args:
            dim: feature dimension D.
            device: where the sums accumulate (a GPU makes the float64 outer products cheap).

        Returns:
            zero statistics.
        """
        zeros = torch.zeros(dim, dtype=torch.float64, device=device)
        return cls(0, zeros, torch.zeros(dim, dim, dtype=torch.float64, device=device))

    @property
    def dim(self) -> int:
        return int(self.total.shape[0])

    def add(self, features: torch.Tensor) -> None:
        """Accumulate a batch of features.

        Args:
            features: (N, D) features of any float dtype.
        """
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise ValueError(f"expected features of shape (N, {self.dim}), got {tuple(features.shape)}")
        f64 = features.detach().to(self.total.device, torch.float64)  # (N, D)
        self.count += int(f64.shape[0])
        self.total += f64.sum(dim=0)
        self.outer += f64.T @ f64

    def merged(self, other: "FeatureStats") -> "FeatureStats":
        """Statistics of the union of two disjoint sets.

        Args:
            other: statistics of the same dimension.

        Returns:
            new combined statistics.
        """
        if other.dim != self.dim:
            raise ValueError(f"cannot merge statistics of dimension {self.dim} and {other.dim}")
        return FeatureStats(self.count + other.count, self.total + other.total, self.outer + other.outer)

    def all_reduced(self, reduce_sum: ReduceSum) -> "FeatureStats":
        """Sum these statistics over all workers.

        Args:
            reduce_sum: element-wise sum over workers (see module docstring).

        Returns:
            the statistics of every worker's features together (on the CPU).
        """
        count = reduce_sum(torch.tensor([self.count], dtype=torch.float64))
        total = reduce_sum(self.total.cpu())
        outer = reduce_sum(self.outer.cpu())
        return FeatureStats(int(round(float(count[0]))), total, outer)

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        """The Gaussian fit: mean and unbiased covariance.

        Returns:
            mu: (D,) float64; sigma: (D, D) float64.
        """
        if self.count < 2:
            raise ValueError(f"a covariance needs at least 2 feature vectors, these statistics hold {self.count}")
        mu = self.total.cpu() / self.count  # (D,)
        sigma = (self.outer.cpu() - self.count * torch.outer(mu, mu)) / (self.count - 1)  # (D, D)
        return mu.numpy(), sigma.numpy()

    def save(self, path: str | Path) -> None:
        """Write to an `.npz` file (count, total, outer).

        Args:
            path: destination file.
        """
        np.savez(path, count=np.int64(self.count), total=self.total.cpu().numpy(), outer=self.outer.cpu().numpy())

    @classmethod
    def load(cls, path: str | Path) -> "FeatureStats":
        """Read statistics written by `save`.

        Args:
            path: an `.npz` file.

        Returns:
            the statistics.
        """
        with np.load(path) as data:
            missing = {"count", "total", "outer"} - set(data.files)
            if missing:
                raise ValueError(f"feature statistics file {path} lacks {sorted(missing)}")
            return cls(int(data["count"]), torch.from_numpy(data["total"].astype(np.float64)),
                       torch.from_numpy(data["outer"].astype(np.float64)))
