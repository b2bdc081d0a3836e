"""Errors and warnings of the data plane."""

from __future__ import annotations


class DataError(ValueError):
    """A dataset, manifest, storage or stream-state problem; the message names the file, key or URL."""


class ObjectNotFound(DataError):
    """A file or object that should exist does not."""


class DataWarning(UserWarning):
    """A skipped sample or shard (corrupt tar, missing key, undecodable image)."""
