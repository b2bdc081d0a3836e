"""Users' segmentation data: image / mask pairs from a folder or a .zip, checked pair by pair.

`SegImages` holds such pairs in memory, from here, from segmentation shards (`seg_shards`) or from the
embedded digit canvases (`seg_canvas`).

Layout (in a folder or at the top of a zip): `images/NAME.<png|tif|tiff>` and `masks/NAME.<png|tif|tiff>`,
paired by NAME. A mask is one channel of class indices (0 = background) of its image's size. Every
problem is an error that names the file at fault: an image without a mask or a mask without an
image, a mask of another size, a class index outside [0, num_classes).
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator

import numpy as np
from PIL import Image
from scipy import ndimage

from distdiff.data.errors import DataError

PAIR_SUFFIXES = {".png", ".tif", ".tiff"}


@dataclass(frozen=True)
class SegImages:
    """Whole images with their masks, possibly of different sizes.

    images: uint8 (C, H, W) each; masks: uint8 (H, W) class indices each; names: one per pair. Without
    instance maps, `instance_maps` takes each connected non-background region as one object.
    """

    names: list[str]
    images: list[np.ndarray]
    masks: list[np.ndarray]
    num_classes: int
    instances: list[np.ndarray] | None = None  # int32 (H, W) object ids (0 background) where known

    @property
    def channels(self) -> int:
        return int(self.images[0].shape[0])

    def instance_maps(self) -> list[np.ndarray]:
        """Object ids per image (what the border weights separate): the known ones, or else the connected
        regions of non-background pixels (touching objects then count as one)."""
        if self.instances is not None:
            return self.instances
        return [ndimage.label(mask > 0)[0].astype(np.int32) for mask in self.masks]


def _members(path: Path) -> dict[str, Callable[[], bytes]]:
    """Relative POSIX path -> a reader of its bytes, for a folder or a zip."""
    if path.is_dir():
        return {f.relative_to(path).as_posix(): f.read_bytes for f in sorted(path.rglob("*")) if f.is_file()}
    if zipfile.is_zipfile(path):
        archive = zipfile.ZipFile(path)
        return {name: (lambda n=name: archive.read(n)) for name in sorted(archive.namelist()) if not name.endswith("/")}
    raise DataError(f"{path} is neither a folder nor a zip file")


def _by_stem(members: dict[str, Callable[[], bytes]], folder: str) -> dict[str, str]:
    stems = {}
    for name in members:
        p = PurePosixPath(name)
        if len(p.parts) >= 2 and p.parts[-2] == folder and p.suffix.lower() in PAIR_SUFFIXES:
            stems[p.stem] = name
    return stems


def open_image(data: bytes, where: str) -> Image.Image:
    """An image from its bytes; a broken file is a DataError naming `where`."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception as err:  # PIL raises several types for broken files
        raise DataError(f"{where}: not a readable image ({err})") from None
    return image


def image_array(image: Image.Image, channels: int) -> np.ndarray:
    """uint8 (C, H, W), converted to `channels` (1: grey, 3: RGB)."""
    array = np.asarray(image.convert("L" if channels == 1 else "RGB"))
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


def _mask_array(image: Image.Image, where: str, num_classes: int) -> np.ndarray:
    """uint8 (H, W) class indices; a palette PNG's indices are its classes."""
    if image.mode not in ("L", "P", "I", "I;16", "1"):
        raise DataError(f"{where}: a mask must have one channel of class indices, not mode {image.mode}")
    mask = np.asarray(image).astype(np.int64)
    if mask.min() < 0 or mask.max() >= num_classes:
        bad = int(mask.max() if mask.max() >= num_classes else mask.min())
        raise DataError(f"{where}: class index {bad} is outside [0, {num_classes}) (num_classes={num_classes})")
    return mask.astype(np.uint8)


def seg_pairs(path: str | Path, num_classes: int, channels: int = 1) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(name, image uint8 (C, H, W), mask uint8 (H, W)) for every pair, in name order.

    Raises:
        DataError: naming the file: unpaired images or masks (all checked before the first pair is
            read), a mask of another size than its image, a class index outside [0, num_classes), an
            unreadable file.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"segmentation data {path} does not exist")
    members = _members(path)
    images, masks = _by_stem(members, "images"), _by_stem(members, "masks")
    if not images:
        raise DataError(f"{path}: no images/NAME.png|tif|tiff found")
    unpaired = sorted(set(images) ^ set(masks))
    if unpaired:
        lonely = [images.get(n) or masks[n] for n in unpaired[:5]]
        raise DataError(f"{path}: {len(unpaired)} file(s) without a partner of the same name, e.g. {', '.join(lonely)}")
    for name in sorted(images):
        image_where, mask_where = f"{path}/{images[name]}", f"{path}/{masks[name]}"
        image = image_array(open_image(members[images[name]](), image_where), channels)
        mask = _mask_array(open_image(members[masks[name]](), mask_where), mask_where, num_classes)
        if mask.shape != image.shape[1:]:
            raise DataError(f"{mask_where} is {mask.shape[1]}x{mask.shape[0]} but its image {images[name]} is "
                            f"{image.shape[2]}x{image.shape[1]}")
        yield name, image, mask
