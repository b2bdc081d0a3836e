"""The trilemma study (LDM vs DDGAN vs one-step GAN): see `python launch/trilemma.py --help`.

    python launch/trilemma.py --config configs/trilemma.yaml            # on Ray (a local cluster if none)
    python launch/trilemma.py --config configs/trilemma.yaml --local    # one process
    python launch/trilemma.py --config configs/trilemma.yaml --quick    # the two-minute check
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from distdiff.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["trilemma", *sys.argv[1:]]))
