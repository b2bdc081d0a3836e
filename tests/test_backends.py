"""The training backend chosen by `distributed.backend`: what each launcher gets, the layouts each
refuses before any worker starts, and checkpoints another backend wrote."""

from __future__ import annotations

from pathlib import Path

import pytest

from distdiff.cli import main
from distdiff.config import RunConfig, load_config
from distdiff.train.backends import DeepSpeedBackend, TorchBackend, training_backend
from distdiff.train.checkpoint import CheckpointError

ROOT = Path(__file__).resolve().parents[1]


def config(*overrides: str) -> RunConfig:
    return load_config(RunConfig, None, list(overrides))


def test_auto_is_deepspeed_under_ray_and_torch_in_one_process():
    assert training_backend(config(), "ray").name == "deepspeed"
    assert training_backend(config(), "local").name == "torch"
    assert training_backend(config("distributed.backend=torch"), "ray").name == "torch"


def test_layouts_a_backend_cannot_run_are_refused_naming_the_key():
    with pytest.raises(ValueError, match="distributed.backend 'torch' trains in one process; 2 workers"):
        training_backend(config("distributed.backend=torch", "distributed.num_workers=2"), "ray")
    with pytest.raises(ValueError, match="distributed.backend 'deepspeed' needs a process group"):
        training_backend(config("distributed.backend=deepspeed"), "local")


def test_the_command_line_refuses_them_before_anything_runs(capsys):
    args = ["train-ldm", "--config", str(ROOT / "configs" / "mnist-embedded.yaml"), "--dry-run"]
    assert main([*args, "distributed.backend=torch", "distributed.num_workers=2"]) == 2
    assert "distributed.backend 'torch'" in capsys.readouterr().err
    assert main([*args, "distributed.backend=fsdp"]) == 2
    assert "distributed.backend" in capsys.readouterr().err
    assert main([*args, "distributed.backend=torch"]) == 0


def _checkpoint(root: Path, files: dict[str, str]) -> Path:
    """A checkpoint folder whose engine folders hold one file each (engine -> file name)."""
    for engine, name in files.items():
        (root / "engines" / engine).mkdir(parents=True, exist_ok=True)
        (root / "engines" / engine / name).write_text("{}")
    return root


def test_a_checkpoint_of_another_backend_is_refused_naming_its_engines(tmp_path):
    torch_written = _checkpoint(tmp_path / "step-00000004",
                                {"unet": "model.safetensors", "ddgan_g": "model.safetensors"})
    cfg = config()
    assert TorchBackend().resume_conversions(torch_written, 1, cfg) == frozenset()
    with pytest.raises(CheckpointError, match=r"ddgan_g, unet were not written by the 'deepspeed'"):
        DeepSpeedBackend().resume_conversions(torch_written, 1, cfg)
    deepspeed_written = _checkpoint(tmp_path / "step-00000008", {"unet": "deepspeed.json"})
    with pytest.raises(CheckpointError, match=r"step-00000008: engine\(s\) unet .*no model.safetensors"):
        TorchBackend().resume_conversions(deepspeed_written, 1, cfg)
