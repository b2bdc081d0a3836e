"""Digit canvases: the embedded segmentation dataset, with no download.

Embedded MNIST digits scattered over a large black canvas (overlaps allowed), with a per-pixel class
mask (0 background, 1 + d for digit d) and an instance map (0 background, k for the k-th digit placed),
which the U-Net paper's border weights need. Training canvases use the first 80 % of each digit class of
the embedded MNIST (which is sorted by class) and held-out canvases the rest, so a held-out score is on
digits the network never saw, of every class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from distdiff.data.embedded import load_embedded_mnist

NUM_SEG_CLASSES = 11  # background + 10 digits
TRAIN_FRACTION = 0.8  # of each digit class for training canvases; the rest for held-out ones
_DIGIT = slice(2, 30)  # the 28 x 28 digit inside the embedded 32 x 32 image


@dataclass(frozen=True)
class Canvases:
    """Images (N, 1, S, S) uint8, masks (N, S, S) uint8 class indices, instances (N, S, S) int32."""

    images: np.ndarray
    masks: np.ndarray
    instances: np.ndarray


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
    """Random training tiles from canvases: an input tile with its mirrored context and the same window
    of the mask (and weight map), so that the network's valid output lands on real pixels.

    Args:
        canvases: from `make_digit_canvases`.
        tile_input: the network's input side (a valid one).
        margin: the network's margin (context on each side of its output).
        weights: optional (N, S, S) float32 weight maps (`seg_weights.unet_weight_map` per canvas).
        flips: random horizontal and vertical flips of each tile.
        elastic_std: standard deviation in pixels of the elastic deformation (`seg_augment`); 0: none.
    """

    def __init__(self, canvases: Canvases, tile_input: int, margin: int, weights: np.ndarray | None = None,
                 flips: bool = True, elastic_std: float = 0.0):
        if tile_input - 2 * margin < 1:
            raise ValueError(f"tile side {tile_input} leaves no output with margin {margin}")
        side = canvases.images.shape[-1]
        if tile_input - 2 * margin > side:
            raise ValueError(f"tile output {tile_input - 2 * margin} is larger than the canvas side {side}")
        pad = ((0, 0), (margin, margin), (margin, margin))
        self.sources = {"image": np.pad(canvases.images[:, 0], pad, mode="reflect"),  # (N, S + 2m, S + 2m)
                        "mask": np.pad(canvases.masks, pad, mode="reflect")}
        if weights is not None:
            self.sources["weight"] = np.pad(weights, pad, mode="reflect")
        self.tile, self.output, self.side = tile_input, tile_input - 2 * margin, side
        self.flips, self.elastic_std = flips, elastic_std

    def _tile(self, n: int, y: int, x: int, flip_y: bool, flip_x: bool, rng: np.random.Generator) -> dict:
        tile = {}
        for key, source in self.sources.items():
            window = source[n, y:y + self.tile, x:x + self.tile]
            window = window[::-1] if flip_y else window
            tile[key] = window[:, ::-1] if flip_x else window
        if self.elastic_std > 0:
            from distdiff.data.seg_augment import displacement_field, elastic_deform

            tile = elastic_deform(tile, displacement_field(self.tile, rng, std=self.elastic_std))
        return tile

    def sample(self, count: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """`image` uint8 (count, 1, T, T), `mask` int64 (count, T, T) and, with weight maps, `weight`
        float32 (count, T, T), T the tile input side."""
        picks = rng.integers(0, len(self.sources["image"]), size=count)
        corners = rng.integers(0, self.side - self.output + 1, size=(count, 2))
        flips = rng.random((count, 2)) < 0.5 if self.flips else np.zeros((count, 2), bool)
        tiles = [self._tile(n, y, x, fy, fx, rng) for n, (y, x), (fy, fx) in zip(picks, corners, flips)]
        batch = {"image": np.stack([t["image"] for t in tiles])[:, None].copy(),
                 "mask": np.stack([t["mask"] for t in tiles]).astype(np.int64)}
        if "weight" in self.sources:
            batch["weight"] = np.stack([t["weight"] for t in tiles]).astype(np.float32)
        return batch
