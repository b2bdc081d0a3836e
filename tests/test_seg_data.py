"""The segmentation task's data and loss: digit canvases, the paper's weight map, the weighted loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from distdiff.data.seg_canvas import NUM_SEG_CLASSES, make_digit_canvases
from distdiff.data.seg_weights import border_weights, class_balance_weights, unet_weight_map
from distdiff.losses import weighted_pixel_cross_entropy


def test_canvases_are_seeded_and_their_masks_follow_the_ink():
    a = make_digit_canvases(3, side=64, digits=(2, 4), seed=1)
    b = make_digit_canvases(3, side=64, digits=(2, 4), seed=1)
    other = make_digit_canvases(3, side=64, digits=(2, 4), seed=2)
    held_out = make_digit_canvases(3, side=64, digits=(2, 4), seed=1, split="test")
    assert np.array_equal(a.images, b.images) and np.array_equal(a.masks, b.masks)
    assert not np.array_equal(a.images, other.images) and not np.array_equal(a.images, held_out.images)
    assert a.images.shape == (3, 1, 64, 64) and a.masks.shape == a.instances.shape == (3, 64, 64)
    assert a.masks.max() < NUM_SEG_CLASSES
    # A pixel is labelled exactly where the brightest digit there reaches the threshold.
    assert np.array_equal(a.masks > 0, a.images[:, 0] >= 96)
    assert np.array_equal(a.masks > 0, a.instances > 0)
    assert all(1 <= len(np.unique(i)) - 1 <= 4 for i in a.instances)  # a digit hidden under others vanishes


def test_a_single_digit_canvas_is_labelled_with_its_digit():
    from distdiff.data.embedded import load_embedded_mnist

    canvas = make_digit_canvases(1, side=28, digits=(1, 1), seed=0)
    images, labels = load_embedded_mnist()
    match = [i for i in range(len(images)) if np.array_equal(images[i, 0, 2:30, 2:30], canvas.images[0, 0])]
    assert match, "the canvas is one whole embedded digit"
    assert set(np.unique(canvas.masks)) == {0, 1 + int(labels[match[0]])}


def test_both_splits_draw_every_digit_class_from_disjoint_digits():
    # The embedded MNIST is sorted by class: a split by position would hold out only 8s and 9s.
    from distdiff.data.embedded import load_embedded_mnist
    from distdiff.data.seg_canvas import digit_pool

    _, labels = load_embedded_mnist()
    train, test = digit_pool(labels, "train"), digit_pool(labels, "test")
    assert not set(train) & set(test) and len(train) + len(test) == len(labels)
    assert set(labels[train]) == set(labels[test]) == set(range(10))
    assert np.bincount(labels[test]).min() >= 0.15 * np.bincount(labels).min()


def test_canvas_arguments_are_checked():
    with pytest.raises(ValueError, match="smaller than a 28 x 28 digit"):
        make_digit_canvases(1, side=20)
    with pytest.raises(ValueError, match="split must be"):
        make_digit_canvases(1, split="val")
    with pytest.raises(ValueError, match="digits per canvas"):
        make_digit_canvases(1, digits=(3, 2))


def test_class_balance_weights_are_inverse_frequencies_with_mean_one():
    mask = np.array([[0, 0, 0, 1]])
    w = class_balance_weights(mask, num_classes=3)
    assert w.mean() == pytest.approx(1.0)
    assert w[0, 3] / w[0, 0] == pytest.approx(3.0)


def test_border_weights_in_the_gap_between_two_objects():
    instances = np.zeros((10, 24), np.int32)
    instances[:, :10], instances[:, 14:] = 1, 2
    w = border_weights(instances, w0=10.0, sigma=5.0)
    # Every gap pixel is d1 + d2 = 5 pixels from the two objects (1 + 4, 2 + 3, ...).
    assert np.allclose(w[:, 10:14], 10.0 * math.exp(-25 / 50))
    assert (w[:, :10] == 0).all() and (w[:, 14:] == 0).all()
    assert not border_weights(np.where(instances == 2, 0, instances)).any()  # one object: no gap
    mask = (instances > 0).astype(np.int64)
    assert np.allclose(unet_weight_map(mask, instances, 2), class_balance_weights(mask, 2) + w)


def test_weighted_cross_entropy_crops_the_target_to_the_valid_output():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 6)
    target = torch.randint(0, 3, (2, 8, 10))
    centre = target[:, 2:6, 2:8]
    plain = F.cross_entropy(logits, centre)
    assert weighted_pixel_cross_entropy(logits, target) == pytest.approx(plain.item())
    assert weighted_pixel_cross_entropy(logits, target, torch.full((2, 8, 10), 2.0)) == pytest.approx(2 * plain.item())
    weights = torch.zeros(2, 8, 10)
    weights[:, 2:6, 2:8] = 1.0  # only the centre counts, so weights outside it change nothing
    assert weighted_pixel_cross_entropy(logits, target, weights) == pytest.approx(plain.item())
    with pytest.raises(ValueError, match="smaller than the logits"):
        weighted_pixel_cross_entropy(logits, target[:, :3])


def _write_pairs(root, masks: dict, images: dict):
    from PIL import Image

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for name, array in images.items():
        Image.fromarray(array).save(root / "images" / name)
    for name, array in masks.items():
        Image.fromarray(array).save(root / "masks" / name)


def test_pairs_from_a_folder_and_a_zip(tmp_path):
    import zipfile

    from distdiff.data.seg_pairs import seg_pairs

    image = (np.arange(48).reshape(6, 8) * 5).astype(np.uint8)
    mask = (np.arange(48).reshape(6, 8) % 3).astype(np.uint8)
    _write_pairs(tmp_path / "data", {"a.png": mask, "b.tif": mask[::-1].copy()}, {"a.png": image, "b.tif": image})
    pairs = list(seg_pairs(tmp_path / "data", num_classes=3))
    assert [p[0] for p in pairs] == ["a", "b"]
    assert pairs[0][1].shape == (1, 6, 8) and np.array_equal(pairs[0][1][0], image)
    assert np.array_equal(pairs[0][2], mask) and np.array_equal(pairs[1][2], mask[::-1])
    with zipfile.ZipFile(tmp_path / "data.zip", "w") as z:
        for f in sorted((tmp_path / "data").rglob("*.*")):
            z.write(f, f.relative_to(tmp_path / "data").as_posix())
    zipped = list(seg_pairs(tmp_path / "data.zip", num_classes=3))
    assert all(np.array_equal(a[2], b[2]) and np.array_equal(a[1], b[1]) for a, b in zip(pairs, zipped))


@pytest.mark.parametrize("problem,message", [
    ("size", r"masks/a.png is 8x5 but its image images/a.png is 8x6"),
    ("class", r"masks/a.png: class index 7 is outside \[0, 3\)"),
    ("unpaired", r"1 file\(s\) without a partner of the same name, e.g. images/c.png"),
    ("rgb", r"masks/a.png: a mask must have one channel of class indices, not mode RGB"),
])
def test_bad_pairs_are_refused_naming_the_file(tmp_path, problem, message):
    from distdiff.data.errors import DataError
    from distdiff.data.seg_pairs import seg_pairs

    image, mask = np.zeros((6, 8), np.uint8), np.zeros((6, 8), np.uint8)
    images, masks = {"a.png": image}, {"a.png": mask}
    if problem == "size":
        masks["a.png"] = mask[:5]
    elif problem == "class":
        masks["a.png"] = np.full((6, 8), 7, np.uint8)
    elif problem == "unpaired":
        images["c.png"] = image
    else:
        masks["a.png"] = np.zeros((6, 8, 3), np.uint8)
    _write_pairs(tmp_path, masks, images)
    with pytest.raises(DataError, match=message):
        list(seg_pairs(tmp_path, num_classes=3))
