"""Run by tests/test_fast_path.py on a CUDA machine, in its own process (a fresh NCCL group):
one NCCL all-reduce, then one step of the joint stage (LDM, DDGAN, GAN) on DeepSpeed ZeRO-2 engines in
bf16 with the whole fast path (inductor compile, channels-last, fused Adam, TF32)."""

import math
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distdiff.bench.gpu import Setting, StepRunner, process_group  # noqa: E402
from distdiff.config import RunConfig, load_config  # noqa: E402
from distdiff.train.fast import FastPath  # noqa: E402


def main() -> None:
    device = torch.device("cuda", 0)
    torch.cuda.set_device(device)
    with process_group(device):
        ones = torch.ones(1024, device=device)
        dist.all_reduce(ones)
        torch.cuda.synchronize(device)
        assert torch.equal(ones, torch.ones_like(ones)), "all-reduce over one process changed the tensor"
        print("all-reduce ok", flush=True)

        cfg = load_config(RunConfig, None, ["space=pixel", "ldm.preset=tiny", "ddgan.preset=tiny", "gan.enabled=true",
                                            "gan.preset=tiny", "stage2.batch_size=8", "device=cuda", "precision=bf16",
                                            "distributed.zero_stage=2"])
        fast = FastPath(compile=True, channels_last=True, fused_optimizer=True, tf32=True, prefetch=True)
        runner = StepRunner(cfg, Setting("deepspeed-fast", "deepspeed", fast, "bf16"), (3, 32, 32), device)
        before = {name: [p.detach().float().clone() for p in e.module.parameters()] for name, e in
                  runner.engines.items()}
        metrics = runner.step()
        torch.cuda.synchronize(device)
        assert metrics and all(math.isfinite(float(v)) for v in metrics.values()), metrics
        for name, engine in runner.engines.items():
            after = [p.detach().float() for p in engine.module.parameters()]
            moved = any(not torch.equal(a, b) for a, b in zip(before[name], after))
            assert moved, f"{name}: no parameter changed in one step"
        runner.close()
        print("joint step ok", sorted(runner.engines), flush=True)


if __name__ == "__main__":
    main()
