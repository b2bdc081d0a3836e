"""Converters on tiny files written here in the real formats, round-tripped through shards."""

import gzip
import io
import pickle
import tarfile
import zipfile

import numpy as np
import pytest
from PIL import Image

from distdiff.data import DataError, build_stream, read_manifest, write_image_shards
from distdiff.data import formats


def read_back(root: str) -> tuple[np.ndarray, np.ndarray]:
    """Every sample of a shard dataset as (uint8 (N, C, H, W), labels (N,)) in dataset order."""
    n = read_manifest(root).num_samples
    images, labels = [None] * n, [None] * n
    for batch in build_stream(root, 1, 0, 1, seed=0, epochs=1):
        i = int(batch["index"][0])
        images[i] = np.rint((batch["image"][0].numpy() + 1) * 127.5).astype(np.uint8)
        labels[i] = int(batch["label"][0])
    return np.stack(images), np.array(labels)


# ---- CIFAR-10 --------------------------------------------------------------------------------
def _cifar_batch(rng, n):
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)  # rows: 1024 R, 1024 G, 1024 B values
    labels = rng.integers(0, 10, n).tolist()
    return {b"batch_label": b"test", b"labels": labels, b"data": data, b"filenames": [b"x.png"] * n}


@pytest.fixture(scope="module")
def cifar_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cifar") / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    batches = {f"data_batch_{i}": _cifar_batch(rng, 3) for i in range(1, 6)} | {"test_batch": _cifar_batch(rng, 4)}
    meta = {b"label_names": [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse",
                             b"ship", b"truck"], b"num_vis": 3072}
    for name, content in [*batches.items(), ("batches.meta", meta)]:
        (folder / name).write_bytes(pickle.dumps(content, protocol=2))
    return folder, batches


@pytest.mark.parametrize("packed", [False, True])
def test_cifar10_round_trip(cifar_folder, tmp_path, packed):
    folder, batches = cifar_folder
    source = folder
    if packed:
        source = tmp_path / "cifar-10-python.tar.gz"
        with tarfile.open(source, "w:gz") as tar:
            tar.add(folder, arcname="cifar-10-batches-py")
    write_image_shards(formats.cifar10(source, "train"), str(tmp_path / "train"), shard_size=4)
    images, labels = read_back(str(tmp_path / "train"))
    expected = np.concatenate([batches[f"data_batch_{i}"][b"data"] for i in range(1, 6)]).reshape(-1, 3, 32, 32)
    np.testing.assert_array_equal(images, expected)
    np.testing.assert_array_equal(labels, sum((batches[f"data_batch_{i}"][b"labels"] for i in range(1, 6)), []))
    assert read_manifest(str(tmp_path / "train")).meta["class_names"][9] == "truck"
    test = formats.cifar10(source, "test")
    assert test.count == 4


def test_cifar10_refuses_pickles_that_run_code(tmp_path):
    folder = tmp_path / "evil"
    folder.mkdir()
    for name in ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps({b"data": print}))
    with pytest.raises(DataError, match="builtins"):
        formats.cifar10(folder, "test")


# ---- MNIST idx ---------------------------------------------------------------------------------
def _idx(array: np.ndarray, code: int = 0x08) -> bytes:
    header = bytes([0, 0, code, array.ndim]) + np.array(array.shape, dtype=">u4").tobytes()
    return header + array.astype(">u1").tobytes()


@pytest.fixture(scope="module")
def mnist_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mnist")
    rng = np.random.default_rng(1)
    digits = rng.integers(0, 256, (30, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 30).astype(np.uint8)
    (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx(digits)))
    (folder / "train-labels-idx1-ubyte").write_bytes(_idx(labels))  # one gzipped, one plain
    return folder, digits, labels


def test_mnist_round_trip(mnist_folder, tmp_path):
    folder, digits, labels = mnist_folder
    write_image_shards(formats.mnist(folder), str(tmp_path / "mnist"), shard_size=7)
    images, got_labels = read_back(str(tmp_path / "mnist"))
    assert images.shape == (30, 1, 32, 32)
    np.testing.assert_array_equal(images[:, 0, 2:30, 2:30], digits)
    assert images[:, :, :2].max() == 0 and images[:, :, :, 30:].max() == 0
    np.testing.assert_array_equal(got_labels, labels)


def test_stacked_mnist_channels_are_digits_matching_the_label(mnist_folder, tmp_path):
    folder, digits, labels = mnist_folder
    write_image_shards(formats.stacked_mnist(folder, num=12, seed=3), str(tmp_path / "stacked"), shard_size=5)
    images, got_labels = read_back(str(tmp_path / "stacked"))
    assert images.shape == (12, 3, 32, 32) and read_manifest(str(tmp_path / "stacked")).meta["num_classes"] == 1000
    for image, label in zip(images, got_labels):
        for channel, digit in zip(image, (label // 100, label // 10 % 10, label % 10)):
            matches = [j for j in range(len(digits)) if np.array_equal(channel[2:30, 2:30], digits[j])]
            assert matches and any(labels[j] == digit for j in matches)


def test_idx_errors_name_the_file(tmp_path):
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 8)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"garbage!")
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        formats.mnist(tmp_path)


# ---- image files -------------------------------------------------------------------------------
def test_image_folder_round_trip_with_classes_from_subfolders(tmp_path):
    rng = np.random.default_rng(2)
    root = tmp_path / "folder"
    expected = []
    for label, name in enumerate(["cats", "dogs"]):
        (root / name).mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"img {i}.png")
            expected.append((pixels.transpose(2, 0, 1), label))
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / "dogs" / "z.jpg", quality=95)
    with Image.open(root / "dogs" / "z.jpg") as jpg:
        expected.append((np.asarray(jpg.convert("RGB")).transpose(2, 0, 1), 1))
    source = formats.image_folder(root)
    write_image_shards(source, str(tmp_path / "shards"), shard_size=3)
    images, labels = read_back(str(tmp_path / "shards"))
    np.testing.assert_array_equal(images, np.stack([e[0] for e in expected]))
    np.testing.assert_array_equal(labels, [e[1] for e in expected])
    assert read_manifest(str(tmp_path / "shards")).meta["class_names"] == ["cats", "dogs"]


def test_image_folder_without_resolution_rejects_mixed_sizes(tmp_path):
    (tmp_path / "a").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "a" / "1.png")
    Image.new("RGB", (9, 8)).save(tmp_path / "a" / "2.png")
    with pytest.raises(DataError, match="2.png"):
        write_image_shards(formats.image_folder(tmp_path), str(tmp_path / "out"))


def test_celebahq_zip_is_resized_and_centre_cropped(tmp_path):
    wide = np.zeros((8, 16, 3), np.uint8)
    wide[:, :4] = (255, 0, 0)
    wide[:, 4:12] = (0, 255, 0)  # the centred 8x8 square: all green
    wide[:, 12:] = (0, 0, 255)
    big = np.kron(np.arange(4, dtype=np.uint8).reshape(2, 2) * 60, np.ones((8, 8), np.uint8))  # 16x16, four flat tiles
    archive = tmp_path / "celeba-hq.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for name, pixels in [("a/00001.png", wide), ("a/00002.png", np.stack([big] * 3, -1))]:
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, format="PNG")
            z.writestr(name, buffer.getvalue())
    write_image_shards(formats.celebahq(archive, resolution=8), str(tmp_path / "hq"), shard_size=1)
    images, labels = read_back(str(tmp_path / "hq"))
    assert images.shape == (2, 3, 8, 8) and labels.tolist() == [0, 0]
    assert (images[0, 1] == 255).all() and (images[0, [0, 2]] == 0).all()
    # the 16x16 image is downscaled 2x: each flat 8x8 tile becomes a 4x4 tile of (nearly) the same value
    assert abs(int(images[1, 0, 1, 1]) - 0) <= 2 and abs(int(images[1, 0, 6, 6]) - 180) <= 2


def test_embedded_mnist_round_trip(tmp_path):
    from distdiff.data.embedded import load_embedded_mnist

    write_image_shards(formats.embedded_mnist(), str(tmp_path / "emb"), shard_size=16, limit=40)
    images, labels = read_back(str(tmp_path / "emb"))
    ref_images, ref_labels = load_embedded_mnist()
    np.testing.assert_array_equal(images, ref_images[:40])
    np.testing.assert_array_equal(labels, ref_labels[:40])


def test_make_shards_command(tmp_path, capsys, mnist_folder):
    from distdiff.make_shards import main

    folder = mnist_folder[0]
    dest = str(tmp_path / "cli")
    assert main(["images", "--format", "mnist", "--input", str(folder), "--dest", dest, "--shard-size", "10"]) == 0
    assert '"samples": 30' in capsys.readouterr().out
    assert main(["check", "--source", dest, "--world-size", "2", "--num-workers", "1"]) == 0
    assert main(["check", "--source", dest, "--world-size", "4", "--num-workers", "1"]) == 2
    assert "readers" in capsys.readouterr().err
    assert main(["images", "--format", "mnist", "--input", str(folder), "--dest", dest]) == 2
    assert "already holds a dataset" in capsys.readouterr().err
