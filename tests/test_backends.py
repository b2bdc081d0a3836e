"""The training backend chosen by `distributed.backend`: what each launcher gets, the layouts each
refuses before any worker starts, and checkpoints another backend wrote."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch

from distdiff.cli import main
from distdiff.config import RunConfig, load_config
from distdiff.train.backends import DeepSpeedBackend, TorchBackend, training_backend
from distdiff.train.checkpoint import CheckpointError
from distdiff.train.engines import TorchEngine

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


class _ShardedEngine(TorchEngine):
    """A TorchEngine whose module shows its true weights only inside `full_weights`, as ZeRO-3's does."""

    partitioned = True

    def __init__(self, module, cfg):
        super().__init__(module, cfg)
        self.true = {k: v.clone() for k, v in module.state_dict().items()}
        with torch.no_grad():
            for p in module.parameters():
                p.zero_()  # what a rank holds outside the block: no full network

    @contextlib.contextmanager
    def full_weights(self):
        shards = {k: v.clone() for k, v in self.module.state_dict().items()}
        self.module.load_state_dict(self.true)
        yield
        self.module.load_state_dict(shards)


def test_ema_reads_weights_through_the_engine_seam():
    from distdiff.config import OptimConfig
    from distdiff.models import build_model
    from distdiff.train.ema import EMA

    torch.manual_seed(0)
    net = build_model("unet", "tiny")
    engine = _ShardedEngine(net, OptimConfig())
    ema = EMA(engine, decay=0.5)
    built = {k: v.clone() for k, v in ema.model.state_dict().items()}
    assert all(built[k].equal(v) for k, v in engine.true.items()), "the EMA starts from the full weights"
    engine.true = {k: v + 1.0 if v.is_floating_point() else v for k, v in engine.true.items()}
    ema.update(engine)  # first decay min(0.5, 1/10) = 0.1: 90 % of the way to the new weights
    moved = ema.model.state_dict()
    for k, v in built.items():
        if v.is_floating_point() and k in dict(net.named_parameters()):
            assert torch.allclose(moved[k], v + 0.9, atol=1e-6), k
