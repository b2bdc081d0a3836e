"""prompt_agreement: see `python launch/prompt_agreement.py --help`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from distdiff.eval.agreement import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
