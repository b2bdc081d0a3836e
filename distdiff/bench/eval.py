"""Throughput of the evaluation pieces: feature extractors (images/s) and samplers (samples/s)."""

from __future__ import annotations

import tempfile
import time

import torch

from distdiff.eval.sources import sample_seed


def _timed(fn) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def _rates(fn, count: int, repeats: int) -> tuple[float, float]:
    """Items per second of `fn()` (which handles `count` items): its first call, and the best of
    `repeats` calls after it."""
    first = _timed(fn)
    return count / first, count / min(_timed(fn) for _ in range(repeats))


def _rate(fn, count: int, repeats: int) -> float:
    """Items per second of `fn()` (which handles `count` items), best of `repeats` after one warm-up."""
    return _rates(fn, count, repeats)[1]


def bench_extractor(extractor, image_shape=(3, 32, 32), num_images: int = 32, repeats: int = 2) -> float:
    """Images per second of a feature extractor on random uint8 images.

    Args:
        extractor: a feature extractor.
        image_shape: (C, H, W) of the input images.
        num_images: images per timed call.
        repeats: timed calls (the best counts).

    Returns:
        images per second.
    """
    images = torch.randint(0, 256, (num_images, *image_shape), dtype=torch.uint8)
    return _rate(lambda: extractor(images), num_images, repeats)


def bench_sources(sources, batch_size: int = 16, repeats: int = 2) -> dict[str, dict[str, float]]:
    """Samples per second of each sample source (generation and decoding, one batch per call), on its
    first call (kernels for the shape prepared on the way) and at its best after that.

    Args:
        sources: sample sources (see `distdiff.eval.sources`).
        batch_size: samples per call.
        repeats: timed calls after the first (the best counts).

    Returns:
        {source key: {"first_call": samples/s, "warm": samples/s, "first_call_seconds_over_warm": ratio}}.
    """
    indices = list(range(batch_size))
    seeds = [sample_seed(0, i) for i in indices]
    rates = {}
    for s in sources:
        first, warm = _rates(lambda s=s: s.generate(indices, seeds), batch_size, repeats)
        rates[s.key] = {"first_call": first, "warm": warm, "first_call_seconds_over_warm": warm / first}
    return rates


def bench_inception_layouts(inception, num_images: int = 32, repeats: int = 2) -> dict[str, dict]:
    """Inception images/s at batch 8 and 32, NCHW and channels-last, measured side by side.

    Returns:
        {"batch B, LAYOUT": {"images_per_s": r, "vs_batch32_nchw": ratio}} for the four settings.
    """
    saved = inception.batch_size, inception.channels_last
    rates = {}
    try:
        for batch in (8, 32):
            for channels_last in (False, True):
                inception.batch_size, inception.channels_last = batch, channels_last
                layout = "channels_last" if channels_last else "nchw"
                rates[f"batch {batch}, {layout}"] = bench_extractor(inception, (3, 32, 32), num_images, repeats)
    finally:
        inception.batch_size, inception.channels_last = saved
    base = rates["batch 32, nchw"]
    return {k: {"images_per_s": r, "vs_batch32_nchw": r / base} for k, r in rates.items()}


def run_benchmark(checkpoint: str | None = None, device: str = "cpu", inception_images: int = 32,
                  batch_size: int = 16, ddim_steps: int = 50, include_ddpm: bool = False,
                  inception_weights: str | None = None, repeats: int = 2, features: bool = True) -> dict:
    """Measure Inception features/s, FD-MNIST features/s and each sampler's samples/s.

    Args:
        checkpoint: a stage-2 export; None builds a tiny untrained one (latent-space MNIST shape).
        device: where everything runs.
        inception_images: images per timed Inception call.
        batch_size: samples per timed sampler call.
        ddim_steps: DDIM steps of the LDM sampler.
        include_ddpm: also time full DDPM sampling (T steps: slow).
        inception_weights: Inception weights source (default search).
        repeats: timed calls per measurement.
        features: also time the feature extractors (Inception: minutes on a CPU).

    Returns:
        a dict of measurements.
    """
    from distdiff.eval.checkpoint import EvalCheckpoint
    from distdiff.eval.classifier import MnistClassifier
    from distdiff.eval.features import InceptionFeatures, MnistClassifierFeatures
    from distdiff.eval.sources import checkpoint_sources
    from distdiff.testing.toy import write_tiny_export

    results = {"device": device, "torch_threads": torch.get_num_threads(), "batch_size": batch_size}
    if features:
        inception = InceptionFeatures(inception_weights, device)
        results["inception_batch_size"] = inception.batch_size
        results["inception_features_per_s"] = bench_extractor(inception, (3, 32, 32), inception_images, repeats)
        results["inception_features_per_s_299"] = bench_extractor(inception, (3, 299, 299), inception_images,
                                                                  repeats)
        results["inception_layouts"] = bench_inception_layouts(inception, inception_images, repeats)
        fd_mnist = MnistClassifierFeatures(MnistClassifier(), channels=3, device=device)
        results["fd_mnist_features_per_s"] = bench_extractor(fd_mnist, (3, 32, 32), 512, repeats)
    with tempfile.TemporaryDirectory() as tmp:
        path = checkpoint or str(write_tiny_export(tmp, image_shape=(1, 32, 32), space="latent", ldm_steps=1000,
                                                   ddgan_steps=4))
        selection = [f"ldm:ddim:{ddim_steps}", "ddgan"] + (["ldm:ddpm"] if include_ddpm else [])
        sources = checkpoint_sources(EvalCheckpoint(path, selection), device)
        results["checkpoint"] = checkpoint or "tiny untrained export (latent, 1x32x32)"
        results["samples_per_s"] = bench_sources(sources, batch_size, repeats)
        results["nfe"] = {s.key: s.nfe for s in sources}
    return results
