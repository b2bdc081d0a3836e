"""Training throughput: distdiff on Ray + DeepSpeed + streaming against a plain PyTorch loop.

    python launch/bench_train.py                 # small presets, batch 16, 20 measured steps
    python launch/bench_train.py --repeats 3      # medians over 3 back-to-back 1-worker/2-worker pairs
    python launch/bench_train.py --preset tiny --steps 20
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from distdiff.bench.train import run_benchmark  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small", help="U-Net and DDGAN preset (tiny, small, ...)")
    parser.add_argument("--batch", type=int, default=16, help="samples per worker per step")
    parser.add_argument("--steps", type=int, default=20, help="measured steps")
    parser.add_argument("--warmup", type=int, default=4, help="steps excluded from the timing")
    parser.add_argument("--out", help="folder for shards and runs (default: a temporary folder)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="pairs of 1-worker and 2-worker runs; the ratios are their medians (noisy machines)")
    parser.add_argument("--no-scaling", action="store_true", help="skip the 2-worker measurement")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    results = run_benchmark(args.preset, args.batch, args.steps, args.warmup, args.out, not args.no_scaling,
                            args.repeats)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
