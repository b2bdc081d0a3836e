"""Benchmark the evaluator's parts: Inception and FD-MNIST features/s, samples/s of each sampler.

    python launch/bench_eval.py [--checkpoint runs/x/ldm/export] [--device cuda] [--ddpm] [--no-features]

Samplers are timed on their first call and at their best after it: the first call of a shape also
prepares its kernels, which the evaluator therefore does once, untimed, before its timed batches.
"""

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from distdiff.bench.eval import run_benchmark  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None, help="stage-2 export (default: a tiny untrained one)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--inception-images", type=int, default=32, help="images per timed Inception call")
    parser.add_argument("--batch-size", type=int, default=16, help="samples per timed sampler call")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps")
    parser.add_argument("--ddpm", action="store_true", help="also time full DDPM sampling")
    parser.add_argument("--inception-weights", default=None)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-features", action="store_true", help="time the samplers only")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = run_benchmark(args.checkpoint, args.device, args.inception_images, args.batch_size, args.steps,
                            args.ddpm, args.inception_weights, args.repeats, not args.no_features)
    text = json.dumps(results, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
