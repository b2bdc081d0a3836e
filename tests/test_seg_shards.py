"""Users' segmentation data as shards: the converter, its checks, reading back, and training from them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_helpers import SEG_SIZES, write_seg_pairs, write_seg_shard_sets
from distdiff.data.errors import DataError
from distdiff.data.seg_shards import read_seg_shards
from distdiff.make_shards import main as make_shards

ROOT = Path(__file__).resolve().parents[1]
def test_pairs_round_trip_through_shards(tmp_path):
    pairs = write_seg_pairs(tmp_path / "pairs")
    dest = tmp_path / "shards"
    assert make_shards(["seg", "--input", str(tmp_path / "pairs"), "--dest", str(dest), "--num-classes", "3",
                        "--channels", "3", "--shard-size", "2"]) == 0
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["kind"] == "seg" and manifest["num_samples"] == 3 and len(manifest["shards"]) == 2
    assert manifest["meta"] | {"source": None} == {"channels": 3, "num_classes": 3, "height": 48, "width": 50,
                                                   "max_height": 64, "max_width": 60, "source": None}
    data = read_seg_shards(str(dest))
    assert data.names == list(SEG_SIZES) and data.num_classes == 3 and data.channels == 3
    for name, image, mask in zip(data.names, data.images, data.masks):
        assert np.array_equal(image, pairs[name][0]) and np.array_equal(mask, pairs[name][1])
    # Without instance maps, each connected region is one object.
    assert data.instance_maps()[0].max() == len(np.unique(data.instance_maps()[0])) - 1 >= 1


def test_the_converter_names_the_file_at_fault(tmp_path, capsys):
    write_seg_pairs(tmp_path / "pairs")
    args = ["seg", "--input", str(tmp_path / "pairs"), "--dest", str(tmp_path / "out"), "--channels", "3"]
    assert make_shards([*args, "--num-classes", "2"]) == 2  # the squares use classes 1 and 2
    assert "masks/a.png: class index 2 is outside [0, 2)" in capsys.readouterr().err
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "pairs" / "masks" / "b.png")
    assert make_shards([*args, "--num-classes", "3"]) == 2
    assert "masks/b.png is 10x10 but its image images/b.tif is 52x52" in capsys.readouterr().err
    (tmp_path / "pairs" / "masks" / "b.png").unlink()
    assert make_shards([*args, "--num-classes", "3"]) == 2
    assert "1 file(s) without a partner of the same name, e.g. images/b.tif" in capsys.readouterr().err
    assert not (tmp_path / "out" / "manifest.json").exists()  # nothing half-written counts as a dataset


def test_reading_checks_the_kind_and_each_shard(tmp_path):
    write_seg_pairs(tmp_path / "pairs", channels=1)
    dest = tmp_path / "shards"
    assert make_shards(["seg", "--input", str(tmp_path / "pairs"), "--dest", str(dest), "--num-classes", "3"]) == 0
    shard = next(dest.glob("*.tar"))
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside a member
    shard.write_bytes(bytes(data))
    with pytest.raises(DataError, match=f"{shard.name}: checksum differs"):
        read_seg_shards(str(dest))
    images = tmp_path / "images"
    assert make_shards(["images", "--format", "embedded-mnist", "--dest", str(images), "--limit", "4"]) == 0
    with pytest.raises(DataError, match="holds image shards, not segmentation pairs"):
        read_seg_shards(str(images))
    from distdiff.data.source import preflight

    with pytest.raises(DataError, match="holds segmentation pairs .* pass it as seg.data to train-seg"):
        preflight(str(dest), 1, 0)


TINY = ["seg.preset=tiny", "seg.tile_output=8", "stage_seg.batch_size=2", "stage_seg.steps=4",
        "stage_seg.checkpoint_every=4", "stage_seg.sample_every=4", "stage_seg.log_every=2"]


def test_train_seg_from_shards_locally(tmp_path):
    from distdiff.cli import main
    from distdiff.models import load_weights

    train, test = write_seg_shard_sets(tmp_path, str(tmp_path / "shards"))
    config = str(ROOT / "configs" / "seg-mnist-canvas.yaml")
    assert main(["train-seg", "--config", config, "--local", f"output_dir={tmp_path / 'runs'}", *TINY,
                 f"seg.data={train}", f"seg.test_data={test}"]) == 0
    stage = tmp_path / "runs" / "seg-mnist-canvas" / "seg"
    scores = json.loads((stage / "heldout.json").read_text())
    assert scores["images"] == 3 and scores["source"] == test and 0.0 <= scores["seg/heldout_mean_iou"] <= 1.0
    net, _ = load_weights(stage / "export" / "seg_unet")
    assert (net.in_channels, net.num_classes) == (3, 3)  # from the shards, not the preset's 1 and 11
    assert (stage / "samples" / "overlay-step00000004.png").is_file()


def test_seg_shard_settings_are_checked_before_training(tmp_path, capsys):
    from distdiff.cli import main

    train, test = write_seg_shard_sets(tmp_path, str(tmp_path / "shards"))
    config = str(ROOT / "configs" / "seg-mnist-canvas.yaml")
    base = ["train-seg", "--config", config, "--dry-run"]
    assert main([*base, f"seg.data={train}"]) == 2
    assert "seg.data and seg.test_data go together" in capsys.readouterr().err
    assert main([*base, f"seg.data={train}", f"seg.test_data={test}", "seg.tile_output=60"]) == 2
    assert "does not fit the smallest image side of seg.data (48)" in capsys.readouterr().err
    assert main([*base, f"seg.data={train}", f"seg.test_data={tmp_path / 'nowhere'}"]) == 2
    assert "seg.test_data: no manifest.json" in capsys.readouterr().err
    assert main([*base, f"seg.data={train}", f"seg.test_data={test}", "seg.tile_output=8"]) == 0
