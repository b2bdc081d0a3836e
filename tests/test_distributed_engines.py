"""Fast checks of the distributed building blocks: DeepSpeed JSON, resume rules, storage, preemption.

No Ray cluster and no process group: these run in a second and pin the rules the end-to-end tests
in `test_distributed_ray.py` rely on.
"""

from __future__ import annotations

import os
import signal

import pytest

from distdiff.config import DistributedConfig, OptimConfig
from distdiff.config import deep_merge
from distdiff.train import preemption
from distdiff.train.checkpoint import CheckpointError
from distdiff.train.deepspeed_engines import (
    ZERO3_RESIDENT,
    build_deepspeed_config,
    effective_zero_stage,
    needs_universal,
)
from distdiff.train.storage import Storage, StorageError


def test_deepspeed_json_comes_from_typed_fields_with_the_raw_dict_merged_last():
    optim = OptimConfig(lr=3e-4, betas=(0.5, 0.9), weight_decay=0.01, warmup_steps=10, grad_clip=2.0)
    dist = DistributedConfig(zero_stage=2, gradient_accumulation_steps=4,
                             deepspeed={"zero_optimization": {"overlap_comm": True}, "gradient_clipping": 0.5})
    config = build_deepspeed_config(optim, "adam", dist, "bf16", micro_batch_size=16)
    assert config["train_micro_batch_size_per_gpu"] == 16 and config["gradient_accumulation_steps"] == 4
    assert config["zero_optimization"] == {"stage": 2, "overlap_comm": True}  # merged, not replaced
    assert config["gradient_clipping"] == 0.5  # the raw dict wins
    assert config["bf16"] == {"enabled": True}
    params = config["optimizer"]["params"]
    assert config["optimizer"]["type"] == "Adam" and params["adam_w_mode"] is False and params["torch_adam"]
    assert params["lr"] == 3e-4 and params["betas"] == [0.5, 0.9] and params["weight_decay"] == 0.01
    assert config["scheduler"]["params"]["warmup_num_steps"] == 10
    assert config["checkpoint"] == {"load_universal": False}
    plain = build_deepspeed_config(OptimConfig(grad_clip=0.0), "adamw", DistributedConfig(zero_stage=0), "fp32", 8)
    assert "gradient_clipping" not in plain and "scheduler" not in plain
    assert plain["optimizer"]["type"] == "AdamW" and plain["bf16"] == {"enabled": False}


def test_second_order_networks_stay_at_zero2_even_against_the_raw_dict():
    dist = DistributedConfig(zero_stage=3, deepspeed={"zero_optimization": {"stage": 3}})
    assert build_deepspeed_config(OptimConfig(), "adam", dist, "fp32", 4, name="ddgan_d")["zero_optimization"][
        "stage"] == 2
    assert build_deepspeed_config(OptimConfig(), "adam", dist, "fp32", 4, name="unet")["zero_optimization"][
        "stage"] == 3
    assert {"ddgan_d", "gan_d"} <= ZERO3_RESIDENT  # both discriminators take R1
    assert effective_zero_stage("ddgan_d", dist) == 2 and effective_zero_stage("unet", dist) == 3
    assert effective_zero_stage("ddgan_d", DistributedConfig(zero_stage=1)) == 1


def test_a_raw_zero_stage_override_needs_no_conversion_on_resume():
    """The stage an engine was built with is the stage the resume compares against: a raw
    `zero_optimization.stage` in distributed.deepspeed does not make every resume convert."""
    from distdiff.train.universal import universal_engines

    dist = DistributedConfig(zero_stage=2, deepspeed={"zero_optimization": {"stage": 1}})
    built = {name: build_deepspeed_config(OptimConfig(), "adam", dist, "fp32", 4, name=name)["zero_optimization"]
             ["stage"] for name in ("unet", "ddgan_d")}
    assert built == {"unet": 1, "ddgan_d": 1}
    saved = {name: {"world_size": 2, "zero_stage": stage, "precision": "fp32"} for name, stage in built.items()}
    assert universal_engines(saved, 2, dist, bf16=False) == frozenset()
    assert universal_engines(saved, 4, dist, bf16=False) == {"unet", "ddgan_d"}  # a real layout change


def test_deep_merge_does_not_touch_its_inputs():
    base, override = {"a": {"b": 1, "c": 2}}, {"a": {"b": 3}, "d": 4}
    assert deep_merge(base, override) == {"a": {"b": 3, "c": 2}, "d": 4}
    assert base == {"a": {"b": 1, "c": 2}} and override == {"a": {"b": 3}, "d": 4}


def meta(world_size: int, stage: int, precision: str = "fp32") -> dict:
    return {"world_size": world_size, "zero_stage": stage, "precision": precision}


def test_universal_conversion_only_where_shards_change_layout():
    assert not needs_universal(meta(2, 2), 2, 2, False)
    assert needs_universal(meta(2, 2), 1, 2, False)
    assert needs_universal(meta(2, 3), 4, 3, False)
    assert needs_universal(meta(2, 2), 2, 3, False)  # another stage, same world size
    assert needs_universal(meta(2, 0, "bf16"), 1, 0, True)  # bf16 keeps sharded fp32 master weights
    assert not needs_universal(meta(2, 0), 1, 0, False)  # plain data parallelism: whole states
    with pytest.raises(CheckpointError, match="ZeRO-0"):
        needs_universal(meta(2, 0), 2, 2, False)
    with pytest.raises(CheckpointError, match="ZeRO-2"):
        needs_universal(meta(2, 2), 2, 0, False)


def test_preemption_requests_combine_and_clear():
    assert preemption.poll() is None
    preemption.request(preemption.SAVE)
    preemption.request(preemption.STOP)
    preemption.request(preemption.SAVE)  # never downgrades a stop
    assert preemption.poll() == preemption.STOP and preemption.poll() is None
    assert preemption.strongest([None, "save", None]) == "save"
    assert preemption.from_code(preemption.code("stop")) == "stop"


def test_signals_become_requests():
    previous = preemption.install_handlers(sigterm=True)
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        assert preemption.poll() == preemption.SAVE
        os.kill(os.getpid(), signal.SIGTERM)
        assert preemption.poll() == preemption.STOP
    finally:
        preemption.restore_handlers(previous)


def test_process_handlers_keep_and_restore_the_previous_ones():
    def previous_handler(signum, frame):
        pass

    before = signal.signal(signal.SIGTERM, previous_handler)
    try:
        assert preemption.install_process_handlers(object())  # called as an actor task: the actor comes first
        assert preemption.install_process_handlers() and signal.getsignal(signal.SIGTERM) is not previous_handler
        os.kill(os.getpid(), signal.SIGTERM)
        assert preemption.poll() == preemption.STOP
        preemption.restore_process_handlers(object())
        assert signal.getsignal(signal.SIGTERM) is previous_handler  # a second install did not overwrite it
    finally:
        signal.signal(signal.SIGTERM, before)


def test_local_storage_lists_only_complete_checkpoints(tmp_path):
    storage = Storage.open(str(tmp_path / "store"))
    storage.check_writable()
    source = tmp_path / "ckpt"
    (source / "engines").mkdir(parents=True)
    (source / "engines" / "w.bin").write_bytes(b"x" * 10)
    for step in (4, 8, 12):
        storage.upload(source, f"step-{step:08d}")
    storage.write_text("step 4", "step-00000004", "COMPLETE")
    storage.write_text("step 8", "step-00000008", "COMPLETE")
    assert [(s, done) for s, _, done in storage.step_dirs()] == [(4, True), (8, True), (12, False)]
    assert storage.latest_complete() == "step-00000008"
    copy = storage.download("step-00000008", tmp_path / "copy")
    assert (copy / "engines" / "w.bin").read_bytes() == b"x" * 10 and (copy / "COMPLETE").is_file()
    storage.delete("step-00000012")
    assert storage.latest_complete() == "step-00000008" and len(storage.step_dirs()) == 2


def test_unsupported_storage_urls_are_refused():
    with pytest.raises(StorageError, match="only local folders and s3://"):
        Storage.open("gs://bucket/x")
    with pytest.raises(StorageError, match="names no bucket"):
        Storage.open("s3://")


def test_cosine_schedule_is_the_same_on_plain_and_deepspeed_engines(tmp_path, monkeypatch):
    """A one-process DeepSpeed engine runs the plain engines' `lr_factor` curve step for step."""
    import torch
    import torch.distributed as dist

    from distdiff.train.deepspeed_engines import deepspeed_engine_factory
    from distdiff.train.engines import TorchEngine, lr_factor

    optim = OptimConfig(lr=1e-3, warmup_steps=3, schedule="cosine", min_lr=1e-5, decay_steps=20, grad_clip=0.0)
    assert "scheduler" not in build_deepspeed_config(optim, "adam", DistributedConfig(zero_stage=2), "fp32", 4)
    factor = lr_factor(optim)
    assert [factor(s) for s in (0, 2)] == [pytest.approx(1 / 3), 1.0]
    assert factor(20) == pytest.approx(0.01) and factor(100) == pytest.approx(0.01)
    monkeypatch.setenv("LOCAL_RANK", "0")  # DeepSpeed insists on it
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        plain = TorchEngine(torch.nn.Linear(4, 2), optim, "adam")
        engine = deepspeed_engine_factory(DistributedConfig(zero_stage=2), "fp32", 4)("unet", torch.nn.Linear(4, 2),
                                                                                     optim, "adam")
        x = torch.randn(4, 4)
        for step in range(25):
            lrs = (plain.lr, engine.lr)
            assert lrs[0] == pytest.approx(lrs[1], rel=1e-9) and lrs[0] == pytest.approx(1e-3 * factor(step)), step
            plain.backward_step(plain.forward_module(x).pow(2).mean())
            engine.backward_step(engine.forward_module(x).pow(2).mean())
        engine.destroy()
    finally:
        dist.destroy_process_group()


def test_both_engines_implement_the_engine_protocol():
    from torch import nn

    from distdiff.config import OptimConfig
    from distdiff.train.deepspeed_engines import DeepSpeedEngine
    from distdiff.train.engines import Engine, TorchEngine

    members = [name for name in vars(Engine) if not name.startswith("_")]
    assert {"module", "backward_step", "save", "load", "consolidate", "destroy", "collective_forward"} <= set(members)
    torch_engine = TorchEngine(nn.Linear(2, 2), OptimConfig())
    assert isinstance(torch_engine, Engine)
    # A DeepSpeed engine needs a process group to exist; its class must carry every member.
    missing = [name for name in members if not hasattr(DeepSpeedEngine, name)]
    assert not missing, f"DeepSpeedEngine lacks {missing}"
