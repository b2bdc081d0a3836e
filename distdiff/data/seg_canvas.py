"""Digit canvases: the embedded segmentation dataset, with no download.

Embedded MNIST digits scattered over a large black canvas (overlaps allowed), with a per-pixel class
mask (0 background, 1 + d for digit d) and an instance map (0 background, k for the k-th digit placed),
which the U-Net paper's border weights need. Training canvases use the first 80 % of each digit class of
the embedded MNIST (which is sorted by class) and held-out canvases the rest, so a held-out score is on
digits the network never saw, of every class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from distdiff.data.embedded import load_embedded_mnist
from distdiff.data.seg_pairs import SegImages

NUM_SEG_CLASSES = 11  # background + 10 digits
TRAIN_FRACTION = 0.8  # of each digit class for training canvases; the rest for held-out ones
_DIGIT = slice(2, 30)  # the 28 x 28 digit inside the embedded 32 x 32 image


@dataclass(frozen=True)
class Canvases:
    """Images (N, 1, S, S) uint8, masks (N, S, S) uint8 class indices, instances (N, S, S) int32."""

    images: np.ndarray
    masks: np.ndarray
    instances: np.ndarray

    def as_seg_images(self) -> SegImages:
        """The canvases as segmentation pairs (with their known instance maps), like users' data."""
        return SegImages([f"canvas-{n}" for n in range(len(self.images))], list(self.images), list(self.masks),
                         NUM_SEG_CLASSES, list(self.instances))


def digit_pool(labels: np.ndarray, split: str) -> np.ndarray:
    """Indices of the digits a split draws from: per class, the first TRAIN_FRACTION ("train") or the rest
    ("test"), so both splits hold every class whatever the order of the digits."""
    pools = []
    for digit in np.unique(labels):
        members = np.flatnonzero(labels == digit)
        cut = int(round(TRAIN_FRACTION * len(members)))
        pools.append(members[:cut] if split == "train" else members[cut:])
    return np.sort(np.concatenate(pools))


def make_digit_canvases(num: int, side: int = 256, digits: tuple[int, int] = (8, 16), split: str = "train",
                        seed: int = 0, threshold: int = 96) -> Canvases:
    """Canvases of scattered embedded digits with their class masks and instance maps.

    A pixel belongs to the digit that is brightest there if that brightness reaches `threshold`
    (the later digit on a tie); the canvas shows the brightest digit at every pixel.

    Args:
        num: number of canvases.
        side: canvas side in pixels (at least 28).
        digits: (fewest, most) digits per canvas, inclusive.
        split: "train" (the first 80 % of each class of embedded digits) or "test" (the rest).
        seed: the draw is a pure function of (num, side, digits, split, seed).
        threshold: the brightness (0-255) from which a pixel counts as the digit's.

    Raises:
        ValueError: a canvas smaller than a digit, an unknown split, or an empty digit range.
    """
    if side < 28:
        raise ValueError(f"canvas side {side} is smaller than a 28 x 28 digit")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if not 1 <= digits[0] <= digits[1]:
        raise ValueError(f"digits per canvas must be a range (fewest, most) with 1 <= fewest <= most, got {digits}")
    images, labels = load_embedded_mnist()
    pool = digit_pool(labels, split)
    rng = np.random.default_rng([seed, side, 0 if split == "train" else 1])
    out = Canvases(np.zeros((num, 1, side, side), np.uint8), np.zeros((num, side, side), np.uint8),
                   np.zeros((num, side, side), np.int32))
    for n in range(num):
        for k in range(1, int(rng.integers(digits[0], digits[1] + 1)) + 1):
            index = int(rng.choice(pool))
            y, x = (int(v) for v in rng.integers(0, side - 28 + 1, size=2))
            _paste(out, n, k, images[index, 0, _DIGIT, _DIGIT], int(labels[index]), y, x, threshold)
    return out


def _paste(canvases: Canvases, n: int, instance: int, digit: np.ndarray, label: int, y: int, x: int,
           threshold: int) -> None:
    window = (slice(y, y + 28), slice(x, x + 28))
    image = canvases.images[n, 0][window]
    wins = (digit >= image) & (digit >= threshold)  # where this digit is the brightest and bright enough
    np.maximum(image, digit, out=image)
    canvases.masks[n][window][wins] = 1 + label
    canvases.instances[n][window][wins] = instance


class TileSampler:
    """Random training tiles from whole images: an input tile with its mirrored context and the same window
    of the mask (and weight map), so that the network's valid output lands on real pixels.

    Args:
        images: uint8 (C, H, W) each (sizes may differ), e.g. a `Canvases`' images.
        masks: uint8 (H, W) class indices, one per image.
        tile_input: the network's input side (a valid one).
        margin: the network's margin (context on each side of its output).
        weights: optional float32 (H, W) weight maps, one per image (`seg_weights.unet_weight_map`).
        flips: random horizontal and vertical flips of each tile.
        elastic_std: standard deviation in pixels of the elastic deformation (`seg_augment`); 0: none.
    """

    def __init__(self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray], tile_input: int, margin: int,
                 weights: Sequence[np.ndarray] | None = None, flips: bool = True, elastic_std: float = 0.0):
        if tile_input - 2 * margin < 1:
            raise ValueError(f"tile side {tile_input} leaves no output with margin {margin}")
        self.sizes = [mask.shape for mask in masks]  # (H, W) of each image
        smallest = min(min(size) for size in self.sizes)
        if tile_input - 2 * margin > smallest:
            raise ValueError(f"tile output {tile_input - 2 * margin} is larger than the smallest image side {smallest}")
        plane = ((margin, margin), (margin, margin))
        self.sources = {"image": [np.pad(i, ((0, 0), *plane), mode="reflect") for i in images],  # (C, H + 2m, W + 2m)
                        "mask": [np.pad(m, plane, mode="reflect") for m in masks]}
        if weights is not None:
            self.sources["weight"] = [np.pad(w, plane, mode="reflect") for w in weights]
        self.tile, self.output = tile_input, tile_input - 2 * margin
        self.flips, self.elastic_std = flips, elastic_std

    def _tile(self, n: int, y: int, x: int, flip_y: bool, flip_x: bool, rng: np.random.Generator) -> dict:
        tile = {}
        for key, sources in self.sources.items():
            window = sources[n][..., y:y + self.tile, x:x + self.tile]
            window = window[..., ::-1, :] if flip_y else window
            tile[key] = window[..., ::-1] if flip_x else window
        if self.elastic_std > 0:
            from distdiff.data.seg_augment import displacement_field, elastic_deform

            tile = elastic_deform(tile, displacement_field(self.tile, rng, std=self.elastic_std))
        return tile

    def sample(self, count: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """`image` uint8 (count, C, T, T), `mask` int64 (count, T, T) and, with weight maps, `weight`
        float32 (count, T, T), T the tile input side."""
        picks = rng.integers(0, len(self.sizes), size=count)
        where = rng.random((count, 2))  # the tile's corner, as a fraction of each image's free range
        flips = rng.random((count, 2)) < 0.5 if self.flips else np.zeros((count, 2), bool)
        tiles = []
        for n, (u, v), (fy, fx) in zip(picks, where, flips):
            height, width = self.sizes[n]
            y, x = int(u * (height - self.output + 1)), int(v * (width - self.output + 1))
            tiles.append(self._tile(n, y, x, fy, fx, rng))
        batch = {"image": np.stack([t["image"] for t in tiles]).copy(),
                 "mask": np.stack([t["mask"] for t in tiles]).astype(np.int64)}
        if "weight" in self.sources:
            batch["weight"] = np.stack([t["weight"] for t in tiles]).astype(np.float32)
        return batch
