"""probe_ddgan: see `python launch/probe_ddgan.py --help`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from distdiff.eval.gan_probe import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
