"""Data parallelism against one process: k steps of 2 DeepSpeed workers (gloo, CPU, fp32), each on half
of every batch, give the weights of one plain process on the whole batches, at every ZeRO stage.

An error shared by all stages (gradients summed instead of averaged, a missed all-reduce, a rank that
starts from other weights) cannot hide behind a comparison of the stages with one another.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.multiprocessing as mp

from distdiff.config import DistributedConfig, OptimConfig
from distdiff.models.registry import build_model

WORLD_SIZE, BATCH, STEPS, STAGES = 2, 4, 3, (0, 1, 2, 3)
# A large eps turns Adam's step into about lr * m / (sqrt(v) + 1), close to SGD: the update then grows
# with the gradient's scale, which Adam's default eps would normalise away (summed gradients would pass).
OPTIM = OptimConfig(lr=1e-2, eps=1.0, warmup_steps=0, grad_clip=0.0)


def _network() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("unet", "tiny")  # group norm, attention, time embedding: 0.2 M parameters


def _batches() -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    return [(torch.randn(BATCH, 3, 8, 8, generator=gen), torch.randint(0, 1000, (BATCH,), generator=gen),
             torch.randn(BATCH, 3, 8, 8, generator=gen)) for _ in range(STEPS)]


def _train(engine, batches) -> None:
    for x, t, target in batches:
        engine.backward_step((engine.forward_module(x, t) - target).pow(2).mean())


def _worker(rank: int, rendezvous: str, out_dir: str) -> None:
    import torch.distributed as dist

    from distdiff.train.deepspeed_engines import deepspeed_engine_factory

    torch.set_num_threads(1)
    os.environ.update(LOCAL_RANK=str(rank), RANK=str(rank), WORLD_SIZE=str(WORLD_SIZE))
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=WORLD_SIZE)
    try:
        half = BATCH // WORLD_SIZE
        mine = [(x[rank * half:(rank + 1) * half], t[rank * half:(rank + 1) * half],
                 y[rank * half:(rank + 1) * half]) for x, t, y in _batches()]
        for stage in STAGES:
            make = deepspeed_engine_factory(DistributedConfig(zero_stage=stage), "fp32", half)
            engine = make("unet", _network(), OPTIM, "adam")
            _train(engine, mine)
            weights = engine.consolidate()  # every rank: gathers the shards under ZeRO-3
            if rank == 0:
                torch.save({k: v.detach().cpu().clone() for k, v in weights.items()}, f"{out_dir}/zero{stage}.pt")
            engine.destroy()
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def data_parallel_weights(tmp_path_factory):
    out = tmp_path_factory.mktemp("data-parallel")
    mp.spawn(_worker, args=(str(out / "rendezvous"), str(out)), nprocs=WORLD_SIZE, join=True)
    return {stage: torch.load(out / f"zero{stage}.pt", weights_only=True) for stage in STAGES}


@pytest.fixture(scope="module")
def one_process_weights():
    from distdiff.train.engines import TorchEngine

    initial = _network()
    start = {k: v.clone() for k, v in initial.state_dict().items()}
    engine = TorchEngine(initial, OPTIM, "adam")
    _train(engine, _batches())
    return start, engine.module.state_dict()


@pytest.mark.parametrize("stage", STAGES)
def test_two_workers_match_one_process_on_the_whole_batch(stage, data_parallel_weights, one_process_weights):
    start, expected = one_process_weights
    got = data_parallel_weights[stage]
    assert got.keys() == expected.keys()
    moved = max((expected[k] - start[k]).abs().max().item() for k in expected)
    worst = max((got[k] - expected[k]).abs().max().item() for k in expected)
    print(f"ZeRO-{stage}: largest weight change {moved:.2e}, largest difference from one process {worst:.2e}")
    assert moved > 1e-3  # the steps did move the weights
    assert worst < 1e-4 * moved
