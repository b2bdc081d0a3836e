"""Train distdiff's MNIST classifier (Stacked-MNIST modes, FD-MNIST features) on the embedded MNIST.

    python launch/train_classifier.py --out runs/classifier/mnist_classifier
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from distdiff.eval.classifier import train_embedded_classifier  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="path stem: writes OUT.safetensors and OUT.json")
    parser.add_argument("--num-train", type=int, default=4000)
    parser.add_argument("--num-test", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--width", type=int, default=16, help="channels of the first stage")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-accuracy", type=float, default=0.98, help="exit 1 when held-out accuracy is lower")
    args = parser.parse_args(argv)
    metrics = train_embedded_classifier(args.out, args.num_train, args.num_test, args.epochs, args.seed, args.width)
    print(json.dumps(metrics, indent=1))
    if metrics["test_accuracy"] < args.min_accuracy:
        print(f"held-out accuracy {metrics['test_accuracy']:.4f} is below {args.min_accuracy}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
