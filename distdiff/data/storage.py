"""Local folders and S3 prefixes behind one small interface, and a resumable boto3 reader.

The S3 client comes from boto3's standard chain only: environment variables (including
`AWS_ENDPOINT_URL`), shared profiles, instance roles. Nothing here reads credentials from a
distdiff config file, and no message prints a secret.

Reading an object streams one GET; when the connection drops mid-object, the reader reopens the
object with a ranged GET at the byte offset it reached (pinned to the same ETag), backing off
exponentially, so a restarting server costs a pause rather than a shard.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import boto3
import botocore.exceptions as bce
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from urllib3.exceptions import HTTPError as Urllib3Error
from webdataset.gopen import gopen, gopen_schemes

from distdiff.data.errors import DataError, ObjectNotFound
from distdiff.data.urls import is_s3, join, split_s3  # noqa: F401 - this module's URL vocabulary

# Errors after which a read is worth retrying: the connection, not the request, failed.
RETRYABLE = (
    bce.ConnectionError,
    bce.HTTPClientError,
    bce.ResponseStreamingError,
    bce.IncompleteReadError,
    bce.ReadTimeoutError,
    Urllib3Error,
    ConnectionError,
    TimeoutError,
)
AUTH_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "ExpiredToken", "InvalidToken"}
MULTIPART = TransferConfig(multipart_threshold=8 * 2**20, multipart_chunksize=8 * 2**20, max_concurrency=4)


@dataclass
class RetryPolicy:
    """How long a reader keeps trying: attempts with backoff base * 2**k, capped."""

    attempts: int = 10
    base_s: float = 0.2
    max_s: float = 5.0

    def delay(self, attempt: int) -> float:
        return min(self.max_s, self.base_s * 2**attempt)


DEFAULT_RETRY = RetryPolicy()


# The AWS settings distdiff reads: where the store is (passed on to Ray workers) and who may use it
# (never passed on: every process resolves credentials through the SDK's chain itself).
AWS_LOCATION = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION")
AWS_IDENTITY = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")


def endpoint_url() -> str | None:
    """The S3 endpoint of the environment (`AWS_ENDPOINT_URL_S3` wins over `AWS_ENDPOINT_URL`), or None."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


_sessions: dict = {}
_clients: dict = {}
_clients_lock = threading.Lock()


def _reset_lock_in_child() -> None:
    global _clients_lock  # a thread of the parent may have held it at the fork
    _clients_lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_lock_in_child)


def _chain_fingerprint() -> str:
    # A new session whenever the environment part of the AWS chain changes (tests switch keys);
    # botocore sessions cache the credentials they resolved.
    names = (*AWS_LOCATION, *AWS_IDENTITY)
    return hashlib.sha256("\0".join(os.environ.get(n, "") for n in names).encode()).hexdigest()


def s3_client(attempts: int = 3):
    """A boto3 S3 client from the standard AWS chain, cached per process, environment and retry count.

    `attempts` is botocore's own retry budget; the resumable reader asks for 1 and runs its own
    backoff, so that an outage is waited out on one predictable schedule.

    Clients never cross a fork (their connection pools would be shared), but the session does:
    a loader worker forked after the parent made its client builds its own in ~10 ms instead of
    re-reading botocore's service models (~0.2-1 s of CPU per worker).
    """
    chain = _chain_fingerprint()
    key = (os.getpid(), chain, attempts)
    with _clients_lock:
        if key not in _clients:
            if chain not in _sessions:
                _sessions[chain] = boto3.session.Session()
            config = Config(retries={"total_max_attempts": attempts, "mode": "standard"}, connect_timeout=5,
                            read_timeout=30, max_pool_connections=16)
            _clients[key] = _sessions[chain].client("s3", config=config)
        return _clients[key]


def describe_client_error(err: Exception, url: str) -> DataError:
    """Turn a botocore error into a DataError that names the URL and says what to check."""
    if isinstance(err, bce.NoCredentialsError):
        return DataError(f"no AWS credentials found for {url}: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
                         "or AWS_PROFILE (endpoint from AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL)")
    if isinstance(err, bce.ClientError):
        code = err.response.get("Error", {}).get("Code", "?")
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in AUTH_CODES or status == 403:
            return DataError(f"access denied ({code}) for {url}: check the AWS credentials "
                             "(AWS_ACCESS_KEY_ID / AWS_PROFILE) and the bucket policy")
        if code in ("NoSuchBucket",):
            return DataError(f"bucket of {url} does not exist")
        if code in ("NoSuchKey", "404", "NotFound"):
            return ObjectNotFound(f"object not found: {url}")
        return DataError(f"S3 error {code} (HTTP {status}) for {url}")
    if isinstance(err, RETRYABLE):
        endpoint = endpoint_url() or "the default AWS endpoint"
        return DataError(f"cannot reach the object store for {url} ({endpoint}): {err}")
    return DataError(f"{type(err).__name__} for {url}: {err}")


def _retryable_client_error(err: Exception) -> bool:
    if not isinstance(err, bce.ClientError):
        return False
    status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
    return status >= 500 or err.response.get("Error", {}).get("Code") in ("SlowDown", "RequestTimeout")


class S3ObjectReader(io.RawIOBase):
    """A read-only file over one S3 object that survives dropped connections.

    Args:
        url: s3://bucket/key.
        retry: attempts and backoff for reconnecting.
        client: a boto3 S3 client (default: `s3_client()`).
    """

    def __init__(self, url: str, retry: RetryPolicy = DEFAULT_RETRY, client=None):
        super().__init__()
        self.url, self.retry = url, retry
        self.bucket, self.key = split_s3(url)
        self.client = client or s3_client(attempts=1)
        self.pos, self.size, self.etag = 0, None, None
        self.retries = 0  # failed attempts that were retried (reconnects included)
        self._body = None
        self._open_with_retries()

    def readable(self) -> bool:
        return True

    def _open(self) -> None:
        kwargs = {"Bucket": self.bucket, "Key": self.key}
        if self.etag is not None:
            # Resume exactly where we were, and only if the object is still the same object.
            kwargs.update(Range=f"bytes={self.pos}-", IfMatch=self.etag)
        response = self.client.get_object(**kwargs)
        if self.etag is None:
            self.size, self.etag = int(response["ContentLength"]), response["ETag"]
        self._body = response["Body"]

    def _open_with_retries(self) -> None:
        for attempt in range(self.retry.attempts):
            try:
                return self._open()
            except Exception as err:  # noqa: BLE001 - sorted into retryable or fatal below
                if not (isinstance(err, RETRYABLE) or _retryable_client_error(err)):
                    raise describe_client_error(err, self.url) from err
                if attempt == self.retry.attempts - 1:
                    raise describe_client_error(err, self.url) from err
                self.retries += 1
                time.sleep(self.retry.delay(attempt))

    def read_chunk(self, size: int) -> bytes:
        """Up to `size` bytes from the current offset (b"" at the end), reconnecting as needed."""
        if self.pos >= self.size:
            return b""
        for attempt in range(self.retry.attempts):
            try:
                data = self._body.read(size)
                if not data:
                    raise bce.IncompleteReadError(actual_bytes=self.pos, expected_bytes=self.size)
                self.pos += len(data)
                return data
            except Exception as err:  # noqa: BLE001
                if not isinstance(err, RETRYABLE) or attempt == self.retry.attempts - 1:
                    raise describe_client_error(err, self.url) from err
                self._drop_body()
                self.retries += 1
                time.sleep(self.retry.delay(attempt))
                self._open_with_retries()
        return b""

    def readinto(self, buffer) -> int:
        data = self.read_chunk(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def read_all(self, chunk: int = 8 << 20) -> bytes:
        """The rest of the object, in large reads (urllib3's own reads beat readinto here)."""
        parts = []
        while data := self.read_chunk(chunk):
            parts.append(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _drop_body(self) -> None:
        try:
            if self._body is not None:
                self._body.close()
        except Exception:  # noqa: BLE001 - the connection is already broken
            pass
        self._body = None

    def close(self) -> None:
        self._drop_body()
        super().close()


def _gopen_s3(url: str, mode: str = "rb", bufsize: int = 8192, **kw):
    if mode != "rb":
        raise DataError(f"s3:// URLs open for reading only, got mode {mode!r} for {url}")
    return io.BufferedReader(S3ObjectReader(url), buffer_size=max(bufsize, 1 << 20))


def register_s3_opener() -> None:
    """Let webdataset's `gopen` (and so `WebDataset(...)`) open s3:// URLs through boto3."""
    gopen_schemes["s3"] = _gopen_s3


register_s3_opener()


def read_bytes(url: str) -> bytes:
    """The whole content of a local file or an S3 object (resumable for S3)."""
    try:
        with gopen(url, "rb") as f:
            return f.read()
    except FileNotFoundError as err:
        raise ObjectNotFound(f"file not found: {url}") from err


def fetch(url: str, retry: RetryPolicy = DEFAULT_RETRY) -> tuple[bytes, int]:
    """Read a whole shard. Returns (content, number of retried S3 attempts)."""
    if not is_s3(url):
        return read_bytes(url), 0
    with S3ObjectReader(url, retry) as reader:
        return reader.read_all(), reader.retries


def write_bytes(url: str, data: bytes) -> None:
    """Write a whole file: atomically (temp + rename) locally, multipart upload on S3."""
    if is_s3(url):
        bucket, key = split_s3(url)
        try:
            s3_client().upload_fileobj(io.BytesIO(data), bucket, key, Config=MULTIPART)
        except Exception as err:  # noqa: BLE001
            raise describe_client_error(err, url) from err
        return
    path = Path(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def exists(url: str) -> bool:
    """True when the file or object exists."""
    if not is_s3(url):
        return Path(url).exists()
    bucket, key = split_s3(url)
    try:
        s3_client().head_object(Bucket=bucket, Key=key)
        return True
    except bce.ClientError as err:
        if err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
            return False
        raise describe_client_error(err, url) from err
    except Exception as err:  # noqa: BLE001
        raise describe_client_error(err, url) from err


def delete(url: str) -> None:
    """Remove a file or object if present."""
    if is_s3(url):
        bucket, key = split_s3(url)
        try:
            s3_client().delete_object(Bucket=bucket, Key=key)
        except Exception as err:  # noqa: BLE001
            raise describe_client_error(err, url) from err
    else:
        Path(url).unlink(missing_ok=True)


def list_sizes(root: str) -> dict[str, int]:
    """Byte size of every file directly under a folder or S3 prefix, keyed by file name."""
    if not is_s3(root):
        folder = Path(root)
        if not folder.is_dir():
            raise DataError(f"folder not found: {root}")
        return {p.name: p.stat().st_size for p in folder.iterdir() if p.is_file()}
    bucket, prefix = split_s3(root.rstrip("/") + "/")
    sizes: dict[str, int] = {}
    try:
        for page in s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                name = item["Key"][len(prefix) :]
                if "/" not in name:
                    sizes[name] = int(item["Size"])
    except Exception as err:  # noqa: BLE001
        raise describe_client_error(err, root) from err
    return sizes
