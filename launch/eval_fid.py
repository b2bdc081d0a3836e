"""Score a distdiff checkpoint: FID (or FD-MNIST), precision/recall, modes, seconds per image, NFE.

    python launch/eval_fid.py --checkpoint runs/x/ldm/export --reference s3://bucket/cifar10 --workers 4
    ray job submit -- python launch/eval_fid.py --checkpoint s3://... --reference s3://... --workers 8

See `python launch/eval_fid.py --help`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from distdiff.launchers.ray_eval import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
