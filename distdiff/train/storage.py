"""A run's durable storage (a local folder or s3://bucket/prefix) through `pyarrow.fs`.

The same filesystem object is handed to Ray Train, which uploads each rank's checkpoint files, and
used here to list, download, mark complete and prune checkpoints. For S3 the endpoint and region come
from the standard AWS environment (`AWS_ENDPOINT_URL`, `AWS_REGION` / `AWS_DEFAULT_REGION`); the
credentials are never put into the filesystem object (which Ray pickles into its trainer state): every
process resolves them itself through the AWS SDK's default chain (`AWS_ACCESS_KEY_ID` /
`AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN` in its own environment, a profile, an instance or pod role).
Nothing is read from the run config and no secret is printed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pyarrow.fs as pafs

from distdiff.data.storage import AWS_LOCATION, endpoint_url
from distdiff.train.checkpoint import COMPLETE_MARKER, MANIFEST_DIR, find_damage

STEP_DIR = re.compile(r"^step-(\d{8})$")
# Where the storage is, never who may use it: the only AWS variables passed on to Ray workers.
AWS_SETTINGS = AWS_LOCATION


class StorageError(RuntimeError):
    """Storage that cannot be reached or written; the message names the URL and what to check."""


def aws_settings() -> dict[str, str]:
    """The non-secret AWS variables of this process (endpoint, region) to pass on to Ray workers.

    Credentials stay out: whatever goes into a Ray runtime_env shows in the dashboard, the state API and
    Ray's logs. Workers read their own (a pod's Secret, an instance role, or, for the local cluster a
    driver starts, the driver's environment, which Ray's processes inherit).
    """
    return {k: os.environ[k] for k in AWS_SETTINGS if os.environ.get(k)}


def s3_filesystem(fail_fast: bool = False) -> pafs.S3FileSystem:
    """An S3 filesystem configured from the standard AWS environment.

    Args:
        fail_fast: one attempt with a short connect timeout (for the pre-flight check).
    """
    endpoint = endpoint_url()
    options: dict = {"region": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"}
    if endpoint:
        parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        options.update(endpoint_override=parsed.netloc, scheme=parsed.scheme, force_virtual_addressing=False)
    # No access_key / secret_key here: the object is pickled into Ray's trainer state, and the AWS SDK
    # reads the same variables from each process's own environment anyway.
    if fail_fast:
        options.update(connect_timeout=3, request_timeout=10,
                       retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=1))
    return pafs.S3FileSystem(**options)


@dataclass
class Storage:
    """A folder in a pyarrow filesystem; `uri` is how messages name it."""

    fs: pafs.FileSystem
    root: str  # path inside `fs` (no scheme)
    uri: str

    @classmethod
    def open(cls, location: str, fail_fast: bool = False) -> "Storage":
        """A local folder (made absolute) or s3://bucket/prefix."""
        if location.startswith("s3://"):
            root = location[len("s3://"):].strip("/")
            if not root:
                raise StorageError(f"storage URL {location!r} names no bucket")
            return cls(s3_filesystem(fail_fast), root, f"s3://{root}")
        if "://" in location:
            raise StorageError(f"storage {location!r}: only local folders and s3:// URLs are supported")
        path = str(Path(location).expanduser().resolve())
        return cls(pafs.LocalFileSystem(), path, path)

    @property
    def is_s3(self) -> bool:
        return isinstance(self.fs, pafs.S3FileSystem)

    def child(self, *parts: str) -> "Storage":
        """The storage of a subfolder."""
        tail = "/".join(p.strip("/") for p in parts)
        return Storage(self.fs, f"{self.root}/{tail}", f"{self.uri}/{tail}")

    def path(self, *parts: str) -> str:
        return "/".join([self.root, *(p.strip("/") for p in parts if p.strip("/"))])

    # -- queries -------------------------------------------------------------------------------

    def exists(self, *parts: str) -> bool:
        return self.fs.get_file_info(self.path(*parts)).type != pafs.FileType.NotFound

    def list_dirs(self) -> list[str]:
        """Names of the immediate subfolders (empty when the folder does not exist)."""
        infos = self.fs.get_file_info(pafs.FileSelector(self.root, allow_not_found=True))
        return sorted(Path(i.path).name for i in infos if i.type == pafs.FileType.Directory)

    def step_dirs(self) -> list[tuple[int, str, bool]]:
        """(step, name, complete) of every `step-XXXXXXXX` folder, oldest first."""
        found = []
        for name in self.list_dirs():
            match = STEP_DIR.match(name)
            if match:
                found.append((int(match.group(1)), name, self.exists(name, COMPLETE_MARKER)))
        return sorted(found)

    def complete_names(self) -> list[str]:
        """Names of the complete checkpoint folders, oldest first."""
        return [name for _, name, done in self.step_dirs() if done]

    def latest_complete(self) -> str | None:
        """Name of the newest complete checkpoint folder, or None."""
        complete = self.complete_names()
        return complete[-1] if complete else None

    def remove_file(self, *parts: str) -> None:
        """Delete one file (no error when it is absent)."""
        if self.exists(*parts):
            self.fs.delete_file(self.path(*parts))

    def file_sizes(self, name: str) -> dict[str, int]:
        """The size of every file under the subfolder `name`, by its path relative to that folder."""
        source = self.path(name)
        infos = self.fs.get_file_info(pafs.FileSelector(source, recursive=True, allow_not_found=True))
        return {i.path[len(source):].lstrip("/"): i.size for i in infos if i.type == pafs.FileType.File}

    def checkpoint_damage(self, name: str) -> str | None:
        """What is wrong with the stored checkpoint `name` as far as a listing tells (a missing or
        truncated file, against its rank's manifest), without downloading it; None when nothing is."""
        sizes = self.file_sizes(name)
        manifests = [(relative.rsplit("/", 1)[-1], self.read_text(name, relative))
                     for relative in sorted(sizes) if relative.startswith(MANIFEST_DIR + "/")]
        return find_damage(manifests, sizes.get)

    # -- transfers -----------------------------------------------------------------------------

    def read_text(self, *parts: str) -> str:
        with self.fs.open_input_stream(self.path(*parts)) as f:
            return f.read().decode()

    def write_text(self, text: str, *parts: str) -> None:
        target = self.path(*parts)
        self.fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
        with self.fs.open_output_stream(target) as f:
            f.write(text.encode())

    def download(self, name: str, local: Path, skip: tuple[str, ...] = ()) -> Path:
        """Copy the subfolder `name` into the local folder `local` (skipping paths containing `skip`)."""
        source = self.path(name) if name else self.root
        infos = self.fs.get_file_info(pafs.FileSelector(source, recursive=True))
        for info in infos:
            if info.type != pafs.FileType.File:
                continue
            relative = info.path[len(source):].lstrip("/")
            if any(s in relative.split("/") for s in skip):
                continue
            target = Path(local) / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            pafs.copy_files(info.path, str(target), source_filesystem=self.fs,
                            destination_filesystem=pafs.LocalFileSystem())
        return Path(local)

    def upload(self, local: Path, name: str) -> None:
        """Copy a local folder (or file) to `name` (overwriting files of the same name)."""
        target = self.path(name) if name else self.root
        self.fs.create_dir(target if Path(local).is_dir() else target.rsplit("/", 1)[0], recursive=True)
        pafs.copy_files(str(local), target, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=self.fs)

    def delete(self, name: str) -> None:
        """Remove the subfolder `name` and everything in it (no error when absent)."""
        if self.exists(name):
            self.fs.delete_dir(self.path(name))

    # -- checks --------------------------------------------------------------------------------

    def check_writable(self) -> None:
        """Write, read back and delete a probe object; raise StorageError with the reason.

        Run before any worker starts, so a wrong bucket or wrong credentials fail in seconds.
        """
        probe = ".distdiff-write-probe"
        try:
            if self.is_s3:
                bucket = self.root.split("/", 1)[0]
                if self.fs.get_file_info(bucket).type == pafs.FileType.NotFound:
                    raise StorageError(f"storage {self.uri}: bucket '{bucket}' does not exist "
                                       f"at {_endpoint_name()}")
            self.write_text("ok", probe)
            if self.read_text(probe) != "ok":
                raise StorageError(f"storage {self.uri}: a probe object read back differently")
            self.fs.delete_file(self.path(probe))
        except StorageError:
            raise
        except OSError as err:
            raise StorageError(_describe(err, self.uri)) from None


def _endpoint_name() -> str:
    return endpoint_url() or "the default AWS endpoint"


def _describe(err: OSError, uri: str) -> str:
    text = str(err)
    if any(code in text for code in ("ACCESS_DENIED", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                                     "HTTP status 403")):
        return (f"storage {uri}: access denied: check the credentials of the process that asked "
                f"(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a profile or a role; Ray workers use their own "
                f"environment) (endpoint {_endpoint_name()}) ({text.splitlines()[0]})")
    if any(code in text for code in ("curlCode", "Couldn't connect", "NETWORK_CONNECTION", "Timeout", "timed out")):
        return f"storage {uri}: cannot reach {_endpoint_name()} ({text.splitlines()[0]})"
    if "NoSuchBucket" in text or "NOT_FOUND" in text:
        return f"storage {uri}: the bucket does not exist ({text.splitlines()[0]})"
    return f"storage {uri}: {type(err).__name__}: {text.splitlines()[0] if text else err}"
