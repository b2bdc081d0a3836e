"""Locations that are either a local path or an `s3://bucket/key` URL (no boto3 here, so that any
package can use these without loading the S3 client)."""

from __future__ import annotations

from pathlib import Path

from distdiff.data.errors import DataError


def is_s3(url: str) -> bool:
    return str(url).startswith("s3://")


def split_s3(url: str) -> tuple[str, str]:
    """'s3://bucket/a/b' -> ('bucket', 'a/b')."""
    if not is_s3(url):
        raise DataError(f"not an s3:// URL: {url}")
    bucket, _, key = url[len("s3://") :].partition("/")
    if not bucket:
        raise DataError(f"no bucket in URL {url}")
    return bucket, key


def join(root: str, name: str) -> str:
    """Join a folder or s3://bucket/prefix with a file name."""
    return str(root).rstrip("/") + "/" + name if is_s3(root) else str(Path(root) / name)
