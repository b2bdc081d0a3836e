"""The in-memory tar and .npy readers agree with tarfile / numpy, and fail safely."""

import io
import tarfile

import numpy as np
import pytest

from distdiff.data import tario
from distdiff.data.writer import build_tar, encode_npy


def _samples(n):
    return [(f"dir/key{i:03d}", {"cls": str(i).encode(), "npy": encode_npy(np.full((2, 3), i, np.float32)),
                                 "json": b"{}"}) for i in range(n)]


def test_fast_reader_matches_tarfile_reader():
    data = build_tar(_samples(5))
    fast, error = tario.parse_tar(data, "x.tar")
    slow, slow_error = tario._parse_with_tarfile(data, "x.tar")
    assert error is None and slow_error is None
    assert [dict(s) for s in fast] == [{k: v for k, v in s.items() if k != "__url__"} for s in slow]
    assert fast[3]["__key__"] == "dir/key003" and int(fast[3]["cls"]) == 3


def test_truncated_tar_keeps_the_samples_before_the_cut():
    data = build_tar(_samples(6))
    samples, error = tario.parse_tar(data[: len(data) // 2], "x.tar")
    assert 0 < len(samples) < 6 and error is not None
    corrupt = bytearray(data)
    corrupt[3 * 512 * 2 + 10] ^= 0xFF  # a header byte of a later member: its checksum no longer matches
    samples, error = tario.parse_tar(bytes(corrupt), "x.tar")
    assert len(samples) < 6 and "checksum" in error


def test_pax_headers_fall_back_to_tarfile():
    out = io.BytesIO()
    long_key = "k" * 120  # longer than a ustar name: tarfile writes a pax header
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for ext, content in (("cls", b"7"), ("json", b"{}")):
            info = tarfile.TarInfo(f"{long_key}.{ext}")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    with pytest.raises(tario.NotPlainTar):
        list(tario.iter_members(out.getvalue()))
    samples, error = tario.parse_tar(out.getvalue(), "pax.tar")
    assert error is None and samples[0]["__key__"] == long_key and samples[0]["cls"] == b"7"


@pytest.mark.parametrize("array", [np.arange(12, dtype=np.float32).reshape(2, 2, 3), np.arange(5, dtype=">i8"),
                                   np.zeros((0, 4), np.float16)])
def test_load_npy_matches_numpy(array):
    loaded = tario.load_npy(encode_npy(array))
    assert loaded.dtype == array.dtype and loaded.shape == array.shape
    np.testing.assert_array_equal(loaded, array)


def test_load_npy_rejects_pickles_and_short_data():
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError):
        tario.load_npy(buffer.getvalue())
    with pytest.raises(ValueError):
        tario.load_npy(encode_npy(np.ones(100, np.float32))[:-8])
