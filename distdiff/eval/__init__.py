"""Evaluation: feature extractors, float64 FID statistics, precision/recall, mode coverage, the evaluator.

The evaluator is a plain function, `evaluate_worker(rank, world_size, reduce_sum, settings)`, that
one process, a torch.distributed group (`multiproc.evaluate_multiprocess`) or Ray actors
(`distdiff.launchers.ray_eval.run_eval_ray`) call alike. Nothing here imports Ray; boto3 is only
reached through `distdiff.data` when a path is an s3:// URL.
"""

from distdiff.eval.evaluator import EvalSettings, evaluate_worker, preflight
from distdiff.eval.frechet import frechet_distance, frechet_distance_from_stats, frechet_distance_torchmetrics
from distdiff.eval.modes import mode_coverage, stacked_mnist_modes
from distdiff.eval.precision_recall import precision_recall
from distdiff.eval.stats import FeatureStats, local_reduce_sum, torch_distributed_reduce_sum

__all__ = [
    "EvalSettings", "evaluate_worker", "preflight", "FeatureStats", "local_reduce_sum",
    "torch_distributed_reduce_sum", "frechet_distance", "frechet_distance_from_stats",
    "frechet_distance_torchmetrics", "precision_recall", "mode_coverage", "stacked_mnist_modes",
]
