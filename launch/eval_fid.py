"""Score a distdiff checkpoint: FID (or FD-MNIST), precision/recall, modes, seconds per image, NFE.

    python launch/eval_fid.py --checkpoint runs/x/ldm/export --reference s3://bucket/cifar10 --workers 4
    ray job submit -- python launch/eval_fid.py --checkpoint s3://... --reference s3://... --workers 8

See `python launch/eval_fid.py --help`.
"""

import sys

from distdiff.launchers.ray_eval import main

if __name__ == "__main__":
    sys.exit(main())
