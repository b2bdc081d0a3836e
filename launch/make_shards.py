"""make_shards: see `python launch/make_shards.py --help`."""

import sys

from distdiff.data.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
