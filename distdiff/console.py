"""Progress bars that read well on a terminal and in a log.

On a terminal a bar redraws in place about once a second. In a log (a Ray worker's output, a Slurm
file, a redirect) every redraw becomes a new line, so there a bar writes at most one line per
`LOG_INTERVAL_S` seconds: a ten-minute stage leaves about twenty lines, not hundreds.
"""

from __future__ import annotations

import sys

LOG_INTERVAL_S = 30.0


def progress_bar(iterable=None, **kwargs):
    """`tqdm(iterable, **kwargs)` with the redraw interval chosen for where the output goes."""
    from tqdm.auto import tqdm  # imported on use: the packages below training need only torch

    kwargs.setdefault("mininterval", 1.0 if sys.stderr.isatty() else LOG_INTERVAL_S)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)
