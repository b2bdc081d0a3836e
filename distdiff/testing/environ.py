"""Environment variables set for the length of a block (test servers, benchmarks)."""

from __future__ import annotations

import contextlib
import os


@contextlib.contextmanager
def environment(values: dict[str, str]):
    """Set `values` in `os.environ` for the block, then give each variable back its old value (or
    remove it, where it was unset)."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
