"""Tests of weight export: safetensors + JSON round trips and error messages."""

from __future__ import annotations

import json

import pytest
import torch

from distdiff.models import build_model, load_weights, save_weights
from distdiff.models.export import weight_paths


pytestmark = pytest.mark.usefixtures("one_thread")


def _perturb(model: torch.nn.Module) -> torch.nn.Module:
    """Random values everywhere (zero-initialised layers included) so outputs reveal any lost tensor."""
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return model


def test_unet_round_trip_equal_outputs_and_metadata(tmp_path):
    torch.manual_seed(0)
    model = _perturb(build_model("unet", "tiny", num_classes=5)).eval()
    x, t, y = torch.randn(2, 3, 8, 8), torch.tensor([3, 700]), torch.tensor([1, 5])
    expected = model(x, t, y)
    written = save_weights(model, tmp_path / "unet", metadata={"step": 1200, "ema": True, "dataset": "cifar10"})
    assert written == tmp_path / "unet.safetensors"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unet.json", "unet.safetensors"]  # no temp files left
    document = json.loads((tmp_path / "unet.json").read_text())
    assert document["model_config"]["kwargs"]["num_classes"] == 5

    for given in ("unet", "unet.safetensors", "unet.json"):
        loaded, metadata = load_weights(tmp_path / given)
        assert metadata == {"step": 1200, "ema": True, "dataset": "cifar10"}
        assert not loaded.training
        assert loaded.model_config == model.model_config
        assert torch.equal(loaded(x, t, y), expected)


def test_vae_scale_factor_and_ddgan_round_trip(tmp_path):
    torch.manual_seed(0)
    vae = _perturb(build_model("vae", "tiny")).eval()
    vae.scale_factor.fill_(0.37)
    save_weights(vae, str(tmp_path / "sub" / "vae.safetensors"))  # str path, missing folder created
    loaded_vae, metadata = load_weights(str(tmp_path / "sub" / "vae"))
    assert metadata == {}
    assert loaded_vae.scale_factor.item() == pytest.approx(0.37)
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    assert torch.equal(loaded_vae.encode(x)[0], vae.encode(x)[0])

    gen = _perturb(build_model("ddgan_generator", "tiny", output_activation="none")).eval()
    save_weights(gen, tmp_path / "gen")
    loaded_gen, _ = load_weights(tmp_path / "gen")
    x_tp1, t, z = torch.randn(2, 3, 8, 8), torch.tensor([0, 3]), torch.randn(2, 8)
    assert torch.equal(loaded_gen(x_tp1, t, z), gen(x_tp1, t, z))
    assert loaded_gen.output_activation == "none"


def test_overwrite_replaces_previous_weights(tmp_path):
    first = build_model("ddgan_discriminator", "tiny")
    second = _perturb(build_model("ddgan_discriminator", "tiny"))
    save_weights(first, tmp_path / "d")
    save_weights(second, tmp_path / "d", metadata={"round": 2})
    loaded, metadata = load_weights(tmp_path / "d")
    assert metadata == {"round": 2}
    for name, value in second.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.json"):
        load_weights(tmp_path / "nothing")
    model = build_model("unet", "tiny")
    save_weights(model, tmp_path / "m")
    (tmp_path / "m.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="m.safetensors"):
        load_weights(tmp_path / "m")


def test_corrupt_files_are_named(tmp_path):
    model = build_model("unet", "tiny")
    save_weights(model, tmp_path / "m")
    (tmp_path / "m.safetensors").write_bytes(b"\x00\x01 not a safetensors file")
    with pytest.raises(ValueError, match="corrupt weights file .*m.safetensors"):
        load_weights(tmp_path / "m")
    (tmp_path / "m.json").write_text("{ truncated")
    with pytest.raises(ValueError, match="corrupt model config file .*m.json"):
        load_weights(tmp_path / "m")
    (tmp_path / "m.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(ValueError, match="not a distdiff-weights file"):
        load_weights(tmp_path / "m")


def test_mismatched_config_and_tensors_rejected(tmp_path):
    save_weights(build_model("unet", "tiny"), tmp_path / "m")
    document = json.loads((tmp_path / "m.json").read_text())
    document["model_config"]["kwargs"]["model_channels"] = 16
    (tmp_path / "m.json").write_text(json.dumps(document))
    with pytest.raises(ValueError, match="do not match"):
        load_weights(tmp_path / "m")
    document["model_config"]["kwargs"]["not_an_arg"] = 1
    (tmp_path / "m.json").write_text(json.dumps(document))
    with pytest.raises(ValueError, match="not_an_arg"):
        load_weights(tmp_path / "m")


def test_non_plain_metadata_rejected(tmp_path):
    with pytest.raises(ValueError, match="metadata"):
        save_weights(build_model("unet", "tiny"), tmp_path / "m", metadata={"tensor": torch.zeros(1)})
    assert not (tmp_path / "m.json").exists()
    with pytest.raises(ValueError, match="model_config"):
        save_weights(torch.nn.Linear(2, 2), tmp_path / "lin")


def test_weight_paths_accept_any_suffix(tmp_path):
    expected = (tmp_path / "a.b.safetensors", tmp_path / "a.b.json")
    assert weight_paths(tmp_path / "a.b") == expected
    assert weight_paths(tmp_path / "a.b.json") == expected
    assert weight_paths(str(tmp_path / "a.b.safetensors")) == expected
