"""train-vae: see `python launch/train_vae.py --help`."""

import sys

from distdiff.cli import main

if __name__ == "__main__":
    sys.exit(main(["train-vae", *sys.argv[1:]]))
