"""Fast readers for what a shard holds in memory: a plain ustar tar and small .npy arrays.

Python's `tarfile` costs ~100 us per member, which caps latent shards (three tiny members per
sample) at a few thousand samples per second. Shards are read whole into memory anyway, so the
headers are parsed here directly; anything this reader does not handle (pax or GNU long-name
headers, base-256 sizes) makes it defer to webdataset's tarfile-based reader for that shard.
"""

from __future__ import annotations

import io
import re

import numpy as np
from webdataset.tariterators import group_by_keys, tar_file_expander

BLOCK = 512
KEY_AND_EXTENSION = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")  # webdataset's rule: key up to the first dot
META_FILE = re.compile(r"__[^/]*__($|/)")


class NotPlainTar(Exception):
    """A header this reader leaves to `tarfile`."""


def _octal(field: bytes) -> int:
    if field[:1] and field[0] & 0x80:
        raise NotPlainTar("base-256 number")
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def iter_members(data: bytes):
    """Yield (name, content) of the regular files of an in-memory ustar tar.

    Raises:
        NotPlainTar: for headers that need tarfile (pax, GNU long names).
        ValueError: for a corrupt header or a truncated member (after yielding what came before).
    """
    pos, end = 0, len(data)
    while pos + BLOCK <= end:
        header = data[pos : pos + BLOCK]
        if header.count(0) == BLOCK:
            return  # end-of-archive marker
        stored = _octal(header[148:156])
        if stored != sum(header[:148]) + 8 * 32 + sum(header[156:]):
            raise ValueError(f"bad tar header checksum at byte {pos}")
        kind, size = header[156:157], _octal(header[124:136])
        name = header[:100].split(b"\0", 1)[0]
        if header[257:262] == b"ustar" and header[345] != 0:
            name = header[345:500].split(b"\0", 1)[0] + b"/" + name
        start = pos + BLOCK
        if start + size > end:
            raise ValueError(f"tar member {name.decode(errors='replace')} truncated")
        if kind in (b"x", b"g", b"L", b"K"):
            raise NotPlainTar(f"tar header type {kind!r}")
        if kind in (b"0", b"\0", b"7"):
            yield name.decode(), data[start : start + size]
        pos = start + (size + BLOCK - 1) // BLOCK * BLOCK
    raise ValueError("tar ends without its end-of-archive marker (truncated)")


def _group(members) -> tuple[list[dict], Exception | None]:
    samples: list[dict] = []
    current: dict | None = None
    try:
        for name, content in members:
            match = KEY_AND_EXTENSION.match(name)
            if match is None or META_FILE.match(name):
                continue
            key, ext = match.group(1), match.group(2).lower()
            if current is None or current["__key__"] != key:
                current = {"__key__": key}
                samples.append(current)
            if ext in current:
                raise ValueError(f"{name}: duplicate file name in tar")
            current[ext] = content
    except (ValueError, UnicodeDecodeError) as err:
        return samples, err
    return samples, None


def _parse_with_tarfile(data: bytes, url: str) -> tuple[list[dict], str | None]:
    errors: list[Exception] = []

    def stop(exn: Exception) -> bool:
        errors.append(exn)
        return False

    files = tar_file_expander([{"url": url, "stream": io.BytesIO(data)}], handler=stop, eof_value=None)
    samples = list(group_by_keys(files, handler=stop))
    if not errors:
        return samples, None
    return samples, f"{type(errors[0]).__name__}: {errors[0].args[0] if errors[0].args else ''}"


def parse_tar(data: bytes, url: str) -> tuple[list[dict], str | None]:
    """Samples (members grouped by key, in tar order) up to the first error, and that error as text."""
    try:
        samples, error = _group(iter_members(data))
    except NotPlainTar:
        return _parse_with_tarfile(data, url)
    return samples, (f"{type(error).__name__}: {error}" if error else None)


_npy_headers: dict[bytes, tuple[np.dtype, tuple[int, ...], int]] = {}


def load_npy(data: bytes) -> np.ndarray:
    """A .npy array from bytes; the parsed header is cached, since every sample of a shard shares it."""
    if data[:6] != b"\x93NUMPY":
        raise ValueError("not an .npy file (bad magic)")
    start = 10 if data[6] == 1 else 12
    length = int.from_bytes(data[8:start], "little")
    header = data[start : start + length]
    parsed = _npy_headers.get(header)
    if parsed is None:
        stream = io.BytesIO(data)
        major, _ = np.lib.format.read_magic(stream)
        read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(stream)
        if fortran or dtype.hasobject:
            raise ValueError("only C-ordered numeric .npy arrays are accepted")
        parsed = (dtype, shape, int(np.prod(shape)))
        if len(_npy_headers) < 64:
            _npy_headers[header] = parsed
    dtype, shape, count = parsed
    if len(data) < start + length + count * dtype.itemsize:
        raise ValueError(f".npy data shorter than its header's shape {shape}")
    return np.frombuffer(data, dtype=dtype, count=count, offset=start + length).reshape(shape)
