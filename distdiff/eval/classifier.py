"""A small MNIST classifier that distdiff trains itself, for Stacked-MNIST modes and FD-MNIST.

Its two uses:
- Stacked MNIST mode counting: each of the three channels is classified as a digit, giving one of
  1000 modes per image.
- A cheap feature network for CI and the embedded run: the penultimate layer (pre-activation, so
  no dimension is constantly zero) gives features whose Fréchet distance is reported as "FD-MNIST".

Weights are saved as `<stem>.safetensors` plus `<stem>.json` (constructor arguments and metrics).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

CLASSIFIER_KIND = "mnist_classifier"


class MnistClassifier(nn.Module):
    """A three-stage CNN on (B, 1, 32, 32) digits in [-1, 1]; 10 logits."""

    def __init__(self, width: int = 16, feature_dim: int = 128):
        super().__init__()
        self.config = {"width": width, "feature_dim": feature_dim}
        w = width

        def stage(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                nn.MaxPool2d(2),
            )

        self.body = nn.Sequential(stage(1, w), stage(w, 2 * w), stage(2 * w, 4 * w))  # 32 -> 4
        self.penultimate = nn.Linear(4 * w * 4 * 4, feature_dim)
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(feature_dim, 10)

    @property
    def feature_dim(self) -> int:
        return self.config["feature_dim"]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer features (before its ReLU).

        Args:
            x: (B, 1, 32, 32) digits in [-1, 1].

        Returns:
            (B, feature_dim) features.
        """
        if x.ndim != 4 or x.shape[1:] != (1, 32, 32):
            raise ValueError(f"the MNIST classifier takes (B, 1, 32, 32) images, got {tuple(x.shape)}")
        return self.penultimate(self.body(x).flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, 10) of (B, 1, 32, 32) digits in [-1, 1]."""
        return self.head(self.dropout(F.relu(self.features(x))))


def uint8_to_unit(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Map uint8 pixels 0..255 to floats in [-1, 1], the convention of every distdiff model.

    Args:
        images: uint8 (B, C, H, W).

    Returns:
        float32 (B, C, H, W).
    """
    images = torch.as_tensor(images)
    return images.float() / 127.5 - 1.0


def _random_affine(x: torch.Tensor, generator: torch.Generator, max_degrees: float = 12.0,
                   max_scale: float = 0.1, max_shift: float = 0.1) -> torch.Tensor:
    """Randomly rotate, scale and translate each image (background -1): augmentation for 4k digits.

    Args:
        x: (B, 1, H, W) images in [-1, 1].
        generator: source of the random draws.
        max_degrees: rotation range (+-).
        max_scale: relative scale range (+-).
        max_shift: translation range (+-) as a fraction of the half-width.

    Returns:
        (B, 1, H, W) transformed images.
    """
    b = x.shape[0]

    def uniform(bound: float) -> torch.Tensor:
        return (torch.rand(b, generator=generator) * 2 - 1) * bound  # (B,)

    angle = uniform(max_degrees) * torch.pi / 180
    scale = 1 + uniform(max_scale)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([
        torch.stack([cos, -sin, uniform(max_shift)], dim=1),
        torch.stack([sin, cos, uniform(max_shift)], dim=1),
    ], dim=1)  # (B, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # Shift to a zero background so that padding_mode="zeros" fills with the -1 background.
    return F.grid_sample(x + 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) - 1


def train_mnist_classifier(
    images: np.ndarray,
    labels: np.ndarray,
    epochs: int = 20,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
    width: int = 16,
    log=None,
) -> MnistClassifier:
    """Train the classifier on uint8 digits.

    Args:
        images: uint8 (N, 1, 32, 32).
        labels: int64 (N,) in 0..9.
        epochs: passes over the data.
        batch_size: images per step.
        lr: peak AdamW learning rate (one-cycle schedule).
        seed: seeds the initialisation, shuffling and augmentation.
        width: channel width of the first stage.
        log: optional callable taking a progress string.

    Returns:
        the trained model in eval mode.
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x_all = uint8_to_unit(images)  # (N, 1, 32, 32)
    y_all = torch.as_tensor(labels, dtype=torch.long)
    model = MnistClassifier(width=width)
    steps_per_epoch = (len(x_all) + batch_size - 1) // batch_size
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(x_all), generator=gen)
        total_loss = 0.0
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            x = _random_affine(x_all[idx], gen)
            loss = F.cross_entropy(model(x), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total_loss += float(loss.detach()) * len(idx)
        if log is not None:
            log(f"epoch {epoch + 1}/{epochs} loss {total_loss / len(order):.4f}")
    return model.eval()


@torch.no_grad()
def predict_digits(model: MnistClassifier, images: torch.Tensor | np.ndarray, batch_size: int = 512) -> torch.Tensor:
    """Most likely digit of each single-channel image.

    Args:
        model: a trained classifier.
        images: uint8 (N, 1, 32, 32).
        batch_size: images per forward pass.

    Returns:
        int64 (N,) digits (on the CPU).
    """
    x = uint8_to_unit(images)
    model.eval()
    device = next(model.parameters()).device
    preds = [model(x[s : s + batch_size].to(device)).argmax(dim=1).cpu() for s in range(0, len(x), batch_size)]
    return torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long)


def accuracy(model: MnistClassifier, images: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of images classified as their label.

    Args:
        model: a trained classifier.
        images: uint8 (N, 1, 32, 32).
        labels: int64 (N,).

    Returns:
        accuracy in [0, 1].
    """
    preds = predict_digits(model, images)
    return float((preds == torch.as_tensor(labels)).float().mean())


def split_train_test(num: int, num_test: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A seeded split of range(num) into train and held-out indices.

    Args:
        num: number of items.
        num_test: how many to hold out.
        seed: seed of the permutation.

    Returns:
        (train_indices, test_indices).
    """
    order = np.random.default_rng(seed).permutation(num)
    return order[num_test:], order[:num_test]


def save_classifier(model: MnistClassifier, stem: str | Path, metrics: dict | None = None) -> None:
    """Write `<stem>.safetensors` and `<stem>.json`.

    Args:
        model: the classifier.
        stem: path without suffix.
        metrics: plain data stored beside the config (e.g. held-out accuracy).
    """
    from safetensors.torch import save_file

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(stem.with_suffix(".safetensors")))
    meta = {"kind": CLASSIFIER_KIND, "config": model.config, "metrics": metrics or {}}
    stem.with_suffix(".json").write_text(json.dumps(meta, indent=2))


def load_classifier(stem: str | Path) -> tuple[MnistClassifier, dict]:
    """Read a classifier written by `save_classifier`.

    Args:
        stem: path with or without the `.safetensors`/`.json` suffix.

    Returns:
        (model in eval mode, metadata dict).
    """
    from safetensors.torch import load_file

    stem = Path(stem)
    if stem.suffix in (".safetensors", ".json"):
        stem = stem.with_suffix("")
    weights, meta_path = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    for path in (weights, meta_path):
        if not path.is_file():
            raise FileNotFoundError(
                f"MNIST classifier file {path} not found; train one with "
                f"`python launch/train_classifier.py --out {stem}`"
            )
    meta = json.loads(meta_path.read_text())
    if meta.get("kind") != CLASSIFIER_KIND:
        raise ValueError(f"{meta_path} describes a {meta.get('kind')!r}, not an MNIST classifier")
    model = MnistClassifier(**meta["config"])
    model.load_state_dict(load_file(str(weights)))
    return model.eval(), meta


def train_embedded_classifier(out: str | Path, num_train: int = 4000, num_test: int = 1000, epochs: int = 20,
                              seed: int = 0, width: int = 16, log=print) -> dict:
    """Train on the embedded MNIST, measure held-out accuracy, save to `out`.

    Args:
        out: path stem of the saved classifier.
        num_train, num_test: a seeded split of the 5,000 embedded digits.
        epochs, seed, width: training settings (see `train_mnist_classifier`).
        log: progress printer (None for silence).

    Returns:
        metrics: {"test_accuracy", "train_accuracy", "num_train", "num_test", "seconds", ...}.
    """
    import time

    from distdiff.data.embedded import load_embedded_mnist

    images, labels = load_embedded_mnist()
    if num_train + num_test > len(images):
        raise ValueError(f"{num_train} + {num_test} digits requested, the embedded MNIST has {len(images)}")
    train_idx, test_idx = split_train_test(len(images), num_test, seed=0)
    train_idx = train_idx[:num_train]
    start = time.perf_counter()
    model = train_mnist_classifier(images[train_idx], labels[train_idx], epochs=epochs, seed=seed, width=width,
                                   log=log)
    metrics = {
        "test_accuracy": accuracy(model, images[test_idx], labels[test_idx]),
        "train_accuracy": accuracy(model, images[train_idx], labels[train_idx]),
        "num_train": int(len(train_idx)), "num_test": int(len(test_idx)), "epochs": epochs, "seed": seed,
        "seconds": time.perf_counter() - start, "data": "embedded-mnist (split seed 0)",
    }
    save_classifier(model, out, metrics)
    return metrics


DEFAULT_CLASSIFIER = dict(num_train=4000, num_test=1000, epochs=20, seed=0, width=16)


def embedded_classifier(cache: str | Path | None = None, log=print) -> Path:
    """The stem of distdiff's default MNIST classifier, trained on the embedded digits once and cached.

    Training takes about a minute on two CPU cores (98.6-98.8 % held-out accuracy); later calls
    find the files under `cache` (default `<distdiff cache>/classifiers`).

    Args:
        cache: folder of cached classifiers.
        log: progress printer (None for silence).

    Returns:
        the path stem (OUT.safetensors / OUT.json).
    """
    from distdiff.eval.inception_weights import cache_dir

    settings = DEFAULT_CLASSIFIER
    stem = Path(cache or cache_dir() / "classifiers") / "embedded-mnist-{width}w-{epochs}e-{seed}s".format(**settings)
    if stem.with_suffix(".safetensors").is_file() and stem.with_suffix(".json").is_file():
        return stem
    if log:
        log(f"training the MNIST classifier for FD-MNIST features and Stacked-MNIST modes (about a minute; "
            f"cached as {stem})")
    stem.parent.mkdir(parents=True, exist_ok=True)
    tmp = stem.with_name(f"tmp-{os.getpid()}-{stem.name}")
    metrics = train_embedded_classifier(tmp, log=None, **settings)
    for suffix in (".json", ".safetensors"):  # the tensors last: their presence marks a complete pair
        os.replace(tmp.with_suffix(suffix), stem.with_suffix(suffix))
    if log:
        log(f"MNIST classifier: {metrics['test_accuracy']:.4f} held-out accuracy")
    return stem
