"""Benchmark overlap-tile segmentation against one pass over the same mirrored image.

    python launch/bench_seg.py [--preset small] [--side 1024] [--tile 0] [--rounds 3] [--device cuda]
"""

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from distdiff.bench.seg import run_benchmark  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small", help="seg_unet preset")
    parser.add_argument("--side", type=int, default=1024, help="side of the square test image")
    parser.add_argument("--tile", type=int, default=0, help="tile output side (default: eight margins, as segment.py)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8, help="tiles per forward pass")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run_benchmark(args.preset, args.side, args.tile, args.rounds, args.batch_size, args.device)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
