"""pipeline: see `python launch/pipeline.py --help`."""

import sys

from distdiff.cli import main

if __name__ == "__main__":
    sys.exit(main(["pipeline", *sys.argv[1:]]))
