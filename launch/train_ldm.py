"""train-ldm: see `python launch/train_ldm.py --help`."""

import sys

from distdiff.cli import main

if __name__ == "__main__":
    sys.exit(main(["train-ldm", *sys.argv[1:]]))
