"""The fast path on a CPU: its switches, the prefetching stream, compiled and channels-last training with
plain checkpoints, the fused optimizer under both engines, and the benchmark in tiny mode. The GPU test at
the end runs only where CUDA is present."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from distdiff.config import ConfigError, DataConfig, OptimConfig, PerfConfig, RunConfig, load_config
from distdiff.train import fast as fast_module
from distdiff.train.data_source import build_source_stream
from distdiff.train.fast import FastPath, PrefetchStream

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "pipeline-smoke.yaml"


def test_switches_read_true_false_and_auto_from_yaml_and_overrides():
    cfg = load_config(RunConfig, None, ["perf.compile=on", "perf.channels_last=false", "perf.prefetch=auto",
                                        "perf.compile_backend=aot_eager"])
    assert (cfg.perf.compile, cfg.perf.channels_last, cfg.perf.prefetch) == (True, False, "auto")
    assert RunConfig().perf == PerfConfig()  # every switch "auto" by default
    with pytest.raises(ConfigError, match="perf.compile"):
        load_config(RunConfig, None, ["perf.compile=sometimes"])
    with pytest.raises(ConfigError, match="perf.compile_mode"):
        load_config(RunConfig, None, ["perf.compile_mode=fastest"])
    with pytest.raises(ConfigError, match="perf.turbo"):
        load_config(RunConfig, None, ["perf.turbo=true"])


def test_auto_is_the_full_path_on_cuda_and_plain_eager_on_a_cpu(monkeypatch):
    monkeypatch.setattr(fast_module, "compile_unavailable", lambda backend, device: None)
    gpu = FastPath.resolve(PerfConfig(), torch.device("cuda"))
    assert (gpu.compile, gpu.channels_last, gpu.fused_optimizer, gpu.tf32, gpu.prefetch) == (True,) * 5
    cpu = FastPath.resolve(PerfConfig(), torch.device("cpu"))
    assert cpu == FastPath()  # measured on the main job's step: none of them pays on a CPU
    assert cpu.describe() == "fast path: plain eager"
    forced = FastPath.resolve(PerfConfig(compile=True, channels_last=True, fused_optimizer=False, prefetch=True),
                              torch.device("cpu"))
    assert (forced.compile, forced.channels_last, forced.fused_optimizer, forced.prefetch) == (True, True, False, True)
    assert FastPath.resolve(PerfConfig(compile=False, channels_last=False, fused_optimizer=False, prefetch=False,
                                       tf32=False), torch.device("cuda")) == FastPath()


def test_compilation_that_cannot_run_falls_back_to_eager_and_says_why(monkeypatch):
    monkeypatch.setattr(fast_module.shutil, "which", lambda name: None)  # no C++ compiler on this "machine"
    path = FastPath.resolve(PerfConfig(compile=True), torch.device("cpu"))
    assert not path.compile
    assert "torch.compile is off" in path.describe() and "C++ compiler" in path.describe()
    # The backend that generates no code needs no compiler.
    assert FastPath.resolve(PerfConfig(compile=True, compile_backend="aot_eager"), torch.device("cpu")).compile


def _batches(stream, n):
    return [b["image"].clone() for b in itertools.islice(iter(stream), n)]


def test_prefetched_batches_and_states_are_those_of_the_plain_stream():
    data = DataConfig(source="embedded-mnist")
    plain = build_source_stream(data, 8, 0, 1, seed=3)
    prefetched = PrefetchStream(build_source_stream(data, 8, 0, 1, seed=3))
    plain_iter, ahead = iter(plain), iter(prefetched)
    for _ in range(4):
        assert torch.equal(next(plain_iter)["image"], next(ahead)["image"])
    # The state is that after the last batch handed out, not after the ones waiting in the queue.
    state = prefetched.state_dict()
    assert state == plain.state_dict()
    resumed = PrefetchStream(build_source_stream(data, 8, 0, 1, seed=3))
    resumed.load_rank_states([state])
    for a, b in zip(_batches(resumed, 3), [next(plain_iter)["image"] for _ in range(3)]):
        assert torch.equal(a, b)
    assert prefetched.metrics().keys() == plain.metrics().keys()  # other members are the inner stream's


class _Failing:
    def __iter__(self):
        yield {"image": torch.zeros(1)}
        raise OSError("shard 7 unreadable")

    def state_dict(self):
        return {}


def test_an_error_in_the_prefetch_thread_reaches_the_training_loop():
    stream = iter(PrefetchStream(_Failing()))
    next(stream)
    with pytest.raises(OSError, match="shard 7"):
        next(stream)


def test_the_fused_optimizer_reaches_torch_and_the_deepspeed_json():
    from distdiff.config import DistributedConfig
    from distdiff.train.deepspeed_engines import build_deepspeed_config
    from distdiff.train.engines import TorchEngine

    assert TorchEngine(torch.nn.Linear(2, 2), OptimConfig(), "adam", fused=True).optimizer.defaults["fused"]
    assert not TorchEngine(torch.nn.Linear(2, 2), OptimConfig(), "adam").optimizer.defaults["fused"]
    params = build_deepspeed_config(OptimConfig(), "adamw", DistributedConfig(zero_stage=2), "bf16", 4,
                                    fused=True)["optimizer"]["params"]
    assert params["torch_adam"] and params["fused"] and not params["foreach"]


@pytest.mark.slow
def test_compiled_channels_last_prefetched_training_keeps_plain_checkpoints(tmp_path, capfd):
    """Stage 2 in pixel space with every switch on (aot_eager: no code generation): it trains, and its
    checkpoints and exports hold the plain networks' keys."""
    from distdiff.launchers.local import train_ldm
    from distdiff.tasks import LatentSource, build_stage2

    switches = ["space=pixel", "gan.enabled=true", "gan.preset=tiny", "perf.compile=true",
                "perf.compile_backend=aot_eager", "perf.channels_last=true", "perf.prefetch=true"]
    cfg = load_config(RunConfig, SMOKE, [f"output_dir={tmp_path}", "stage2.steps=3", *switches])
    train_ldm(cfg)
    assert "fast path: torch.compile (aot_eager), channels-last, prefetch" in capfd.readouterr().out
    run = tmp_path / cfg.name / "ldm"
    setup = build_stage2(cfg, LatentSource(None), (1, 32, 32), (1, 32, 32), None)
    checkpoint = run / "checkpoints" / "step-00000003" / "engines"
    for name, net in setup.networks.items():
        keys = set(net.module.state_dict())  # no `_orig_mod.` prefixes from the compiled wrapper
        assert set(load_file(checkpoint / name / "model.safetensors")) == keys, name
        weights = load_file(run / "export" / f"{net.export_name}.safetensors")
        assert set(weights) == keys, name
        assert all(torch.isfinite(w).all() for w in weights.values()), name


@pytest.mark.slow
def test_the_benchmark_runs_every_setting_in_tiny_mode(tmp_path):
    """`launch/bench_gpu.py --tiny` on a CPU: plain eager, the fast path and the DeepSpeed engine (its own
    process, as a user runs it: DeepSpeed keeps its process groups for the life of a process)."""
    out = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, str(ROOT / "launch" / "bench_gpu.py"), "--tiny", "--device", "cpu",
                          "--steps", "1", "--warmup", "1", "--sample-batch", "2", "--compile-backend", "aot_eager",
                          "--samplers", "DDIM-50", "DDGAN-4", "--json", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "| ddpm-cifar10 | deepspeed-fast |" in run.stdout and "| DDGAN-4 |" in run.stdout
    results = json.loads(out.read_text())
    for model in ("ddpm-cifar10", "ddgan-cifar10"):
        rows = results["training"][model]
        assert rows["gflop_per_image"] > 0
        for setting in ("eager-fp32", "fast", "deepspeed-fast"):
            assert rows[setting]["images_per_s"] > 0 and rows[setting]["tflops"] > 0, (model, setting)
        assert rows["deepspeed-fast"]["ratio_to_plain"] > 0
    # DDPM-1000 is the DDIM path's ancestral twin through the same sampler, left out for time here.
    assert set(results["sampling"]["fast"]) == {"LDM DDIM-50", "DDGAN-4"}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_one_deepspeed_bf16_zero2_step_of_the_joint_stage_and_an_nccl_all_reduce():
    run = subprocess.run([sys.executable, str(Path(__file__).with_name("gpu_child.py"))], capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "all-reduce ok" in run.stdout and "joint step ok" in run.stdout
