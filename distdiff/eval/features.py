"""Feature extractors: uint8 images in, (N, D) feature vectors out.

Every extractor takes the uint8 images a PNG would hold (see `distdiff.images.quantize_to_uint8`), so
generated samples and dataset images go through exactly the same preprocessing. An extractor has:
`name` (identifies network, weights and preprocessing; part of the reference-statistics cache key),
`metric_name` (what the Fréchet distance on its features is called), `feature_dim`, and
`__call__(images) -> features`. Anything with those members can be injected into the evaluator.

Inception preprocessing (the one resize, documented): uint8 values v in 0..255, grayscale repeated
to 3 channels, resized to 299x299 with `torch.nn.functional.interpolate(mode="bilinear",
align_corners=False, antialias=False)` (half-pixel centres, no antialiasing; the same call that
pytorch-fid makes), then mapped to (v - 128) / 128 in [-1, 1) as the TF graph did. Images already
at 299x299 are not resampled.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F

from distdiff.eval.classifier import MnistClassifier, load_classifier, uint8_to_unit
from distdiff.eval.inception_weights import DOWNLOAD_SHA1, file_sha1, resolve_inception_weights

INCEPTION_SIZE = 299
INCEPTION_DIM = 2048


class FeatureExtractor(Protocol):
    """What the evaluator needs of a feature network."""

    name: str
    metric_name: str
    feature_dim: int

    def __call__(self, images: torch.Tensor) -> torch.Tensor:  # uint8 (B, C, H, W) -> (B, D)
        ...


def _check_uint8(images: torch.Tensor) -> None:
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"extractors take uint8 (B, C, H, W) images, got {images.dtype} {tuple(images.shape)}")


def inception_preprocess(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 1|3, H, W) -> float32 (B, 3, 299, 299) in [-1, 1), as described in the module docstring."""
    _check_uint8(images)
    x = images.float()  # (B, C, H, W) in [0, 255]
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    elif x.shape[1] != 3:
        raise ValueError(f"Inception features need 1 or 3 channels, got {x.shape[1]}")
    if x.shape[2:] != (INCEPTION_SIZE, INCEPTION_SIZE):
        x = F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False,
                          antialias=False)
    return (x - 128.0) / 128.0


class InceptionFeatures:
    """FID's Inception-v3 pool3 features (2048-d) from a TorchScript file.

    Args:
        weights: local path, s3:// or https:// URL; None searches the usual places
            (see `inception_weights.resolve_inception_weights`).
        device: where the network runs.
        batch_size: images per forward pass; None picks 8 on a CPU (faster per image than 32 there, see
            `launch/bench_eval.py`'s "inception_layouts") and 64 elsewhere.
        allow_download: let the weight search download the file when nothing local is found.
    """

    metric_name = "FID"
    feature_dim = INCEPTION_DIM

    def __init__(self, weights: str | Path | None = None, device: str | torch.device = "cpu",
                 batch_size: int | None = None, allow_download: bool = False):
        self.path = resolve_inception_weights(str(weights) if weights else None, allow_download)
        self.device = torch.device(device)
        self.batch_size = batch_size or (8 if self.device.type == "cpu" else 64)
        self.channels_last = True
        try:
            self.net = torch.jit.load(str(self.path), map_location=self.device).eval()
        except Exception as err:  # noqa: BLE001 - any load failure means the file is not usable
            raise ValueError(f"cannot load Inception TorchScript file {self.path}: {err}") from err
        digest = file_sha1(self.path)
        weights_id = "tf2015-12-05" if digest == DOWNLOAD_SHA1 else f"custom-{digest[:12]}"
        self.name = f"inception-{weights_id}-pool3-bilinear{INCEPTION_SIZE}"

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) -> float32 (B, 2048) on the extractor's device."""
        _check_uint8(images)
        out = []
        for start in range(0, images.shape[0], self.batch_size):
            # Resize where the network runs: on a GPU the bilinear resize is nearly free.
            x = inception_preprocess(images[start : start + self.batch_size].to(self.device))
            # Channels-last activations: oneDNN's convolutions run faster on a CPU (same benchmark);
            # the features agree with the NCHW ones to about 1e-5.
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            feats = self.net(x)
            if feats.ndim != 2 or feats.shape[1] != INCEPTION_DIM:
                raise ValueError(f"{self.path} returned features of shape {tuple(feats.shape)}, expected (B, 2048)")
            out.append(feats.float())
        return torch.cat(out) if out else torch.zeros(0, INCEPTION_DIM, device=self.device)


def state_digest(module: torch.nn.Module) -> str:
    """A short hash of a module's parameters and buffers, to tell weights apart in cache keys."""
    h = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        h.update(key.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


class MnistClassifierFeatures:
    """Penultimate-layer features of the distdiff MNIST classifier: the cheap "FD-MNIST" network.

    Each channel is embedded as its own digit and the per-channel features are concatenated, so
    MNIST (1 channel) gives 128-d and Stacked MNIST (3 channels) 384-d features.

    Args:
        classifier: a trained `MnistClassifier`, or the path stem of a saved one.
        channels: channels of the images it will see.
        device: where the network runs.
        batch_size: digits per forward pass.
    """

    metric_name = "FD-MNIST"

    def __init__(self, classifier: MnistClassifier | str | Path, channels: int = 1,
                 device: str | torch.device = "cpu", batch_size: int = 512):
        if not isinstance(classifier, MnistClassifier):
            classifier, _ = load_classifier(classifier)
        self.device = torch.device(device)
        self.classifier = classifier.to(self.device).eval()
        self.channels = channels
        self.batch_size = batch_size
        self.feature_dim = channels * classifier.feature_dim
        self.name = f"mnist-classifier-{state_digest(classifier)}-c{channels}"

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, 32, 32) -> float32 (B, C * feature_dim) on the extractor's device."""
        _check_uint8(images)
        b, c, h, w = images.shape
        if c != self.channels or (h, w) != (32, 32):
            raise ValueError(f"FD-MNIST features were set up for ({self.channels}, 32, 32) images, got {(c, h, w)}")
        digits = uint8_to_unit(images.reshape(b * c, 1, h, w))  # (B*C, 1, 32, 32)
        feats = [self.classifier.features(digits[s : s + self.batch_size].to(self.device)).float()
                 for s in range(0, len(digits), self.batch_size)]
        return torch.cat(feats).reshape(b, -1) if feats else torch.zeros(0, self.feature_dim, device=self.device)
