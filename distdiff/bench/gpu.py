"""The fast path measured: training images/s, TFLOP/s and MFU of the paper-size networks, and sampling time.

For `ddpm-cifar10` (batch 128) and `ddgan-cifar10` (batch 64, the paper's per-GPU batch), one training
step of distdiff's task (the U-Net's epsilon loss; the DDGAN's discriminator step with lazy R1, generator
step) with the EMA update, timed in three settings side by side in one process:

- `eager-fp32`: plain PyTorch engines, fp32, no compile, NCHW, the unfused optimizer;
- `fast`: plain PyTorch engines with bf16 autocast, channels-last, `torch.compile`, fused Adam(W), TF32;
- `deepspeed-fast`: distdiff's DeepSpeed engine (ZeRO-2, bf16 with fp32 master weights) with the same
  switches, in a one-process group: its ratio to `fast` is what the engine costs.

Batches are fixed random tensors already on the device: data loading is measured by `bench_data.py`.
FLOPs are counted once per model with `torch.utils.flop_counter` over an eager fp32 step (matmuls and
convolutions, forward and backward; for the DDGAN a step without R1, so its MFU is a few per cent low).
MFU divides achieved FLOP/s by the device's dense bf16 peak (`--peak-tflops`, or the table below).
Then DDPM-1000, DDIM-50 and DDGAN-4 sampling of one batch (`--sample-batch`, 100 by default), reported
as seconds per 100 images, eagerly in fp32 and on the fast path.

`cpu_step` answers the CPU question: on the main job's stage-2 step, what each switch does there.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from distdiff.config import RunConfig, load_config
from distdiff.train.fast import FastPath

# Dense bf16 peaks (TFLOP/s, no sparsity) from the vendors' data sheets, matched against the device name.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "L4": 121.0}


@dataclass(frozen=True)
class BenchModel:
    member: str  # "ldm" or "ddgan"
    preset: str
    batch: int
    shape: tuple[int, int, int] = (3, 32, 32)


MODELS = {
    "ddpm-cifar10": BenchModel("ldm", "ddpm-cifar10", 128),
    "ddgan-cifar10": BenchModel("ddgan", "ddgan-cifar10", 64),
}


@dataclass(frozen=True)
class Setting:
    name: str
    backend: str  # "torch" or "deepspeed"
    fast: FastPath
    precision: str


def settings(compile_backend: str = "inductor") -> list[Setting]:
    fast = FastPath(compile=True, compile_backend=compile_backend, channels_last=True, fused_optimizer=True,
                    tf32=True)
    return [Setting("eager-fp32", "torch", FastPath(), "fp32"), Setting("fast", "torch", fast, "bf16"),
            Setting("deepspeed-fast", "deepspeed", fast, "bf16")]


def model_config(model: BenchModel, tiny: bool, device: torch.device) -> RunConfig:
    """Stage 2 in pixel space with only `model.member` enabled."""
    preset = "tiny" if tiny else model.preset
    batch = 4 if tiny else model.batch
    members = {"ldm": "false", "ddgan": "false"}
    members[model.member] = "true"
    return load_config(RunConfig, None, [
        "space=pixel", f"ldm.enabled={members['ldm']}", f"ddgan.enabled={members['ddgan']}", f"ldm.preset={preset}",
        f"ddgan.preset={preset}", f"stage2.batch_size={batch}", f"device={device.type}",
        "distributed.zero_stage=2"])


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_TFLOPS.items() if key in name), None)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def process_group(device: torch.device):
    """A one-process group for DeepSpeed engines (NCCL on CUDA, gloo on CPU)."""
    import torch.distributed as dist

    os.environ.setdefault("LOCAL_RANK", "0")
    with tempfile.TemporaryDirectory(prefix="distdiff-bench-") as tmp:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                init_method=f"file://{Path(tmp) / 'rendezvous'}", rank=0, world_size=1)
        try:
            yield
        finally:
            dist.destroy_process_group()


class StepRunner:
    """The stage-2 networks of `cfg` on engines of one setting, their EMAs and the joint task, stepping on
    one fixed batch of images in [-1, 1]."""

    def __init__(self, cfg: RunConfig, setting: Setting, shape: tuple[int, int, int], device: torch.device):
        from distdiff.tasks import LatentSource, build_stage2
        from distdiff.train.backends import TorchBackend
        from distdiff.train.deepspeed_engines import deepspeed_engine_factory
        from distdiff.train.stages import stage2_engines

        torch.manual_seed(0)
        fast = setting.fast
        fast.apply_globals()
        cfg = replace(cfg, precision=setting.precision, perf=replace(cfg.perf, fused_optimizer=fast.fused_optimizer))
        if setting.backend == "deepspeed":
            make = deepspeed_engine_factory(cfg.distributed, setting.precision, cfg.stage2.batch_size,
                                            fused=fast.fused_optimizer)
        else:
            make = TorchBackend().engine_factory(cfg, cfg.stage2.batch_size, frozenset())
        setup = build_stage2(cfg, LatentSource(None), shape, shape, None)
        self.engines, self.emas = stage2_engines(setup, make, fast, device)
        self.task, self.device, self.precision = setup.task, device, setting.precision
        images = torch.rand((cfg.stage2.batch_size, *shape), generator=torch.Generator().manual_seed(1)) * 2 - 1
        self.batch = fast.batch_to({"image": images}, device)
        self.generator = torch.Generator(device=device).manual_seed(0)
        self.step_index = 0

    def step(self) -> dict:
        """One training step of every network and the EMA updates; the task's metrics."""
        autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16) if self.precision == "bf16"
                    else contextlib.nullcontext())
        with autocast:
            metrics = self.task.step(self.batch, self.engines, self.step_index, self.generator)
        for name, ema in self.emas.items():
            ema.update(self.engines[name])
        self.step_index += 1
        return metrics

    def close(self) -> None:
        self.engines.destroy()


def count_flops_per_image(cfg: RunConfig, model: BenchModel, device: torch.device) -> float:
    """Matmul and convolution FLOPs per training image (forward + backward), eager fp32."""
    from torch.utils.flop_counter import FlopCounterMode

    trainer = StepRunner(cfg, settings()[0], model.shape, device)
    # A step without R1: the counter's hooks cannot follow R1's inner autograd.grad. R1 runs on one step in
    # lazy_reg (15), so the count, and MFU with it, is a few per cent low for the DDGAN.
    trainer.step_index = 1
    with FlopCounterMode(display=False) as counter:
        trainer.step()
    trainer.close()
    return counter.get_total_flops() / cfg.stage2.batch_size


def time_training(cfg: RunConfig, model: BenchModel, setting: Setting, device: torch.device, steps: int,
                  warmup: int) -> dict:
    """Images/s of `steps` steps after `warmup` (compilation included there), and peak device memory."""
    started = time.perf_counter()
    trainer = StepRunner(cfg, setting, model.shape, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(warmup):
        trainer.step()
    _sync(device)
    warm = time.perf_counter() - started
    start = time.perf_counter()
    for _ in range(steps):
        trainer.step()
    _sync(device)
    seconds = time.perf_counter() - start
    trainer.close()
    result = {"images_per_s": steps * cfg.stage2.batch_size / seconds, "step_ms": 1000 * seconds / steps,
              "setup_and_warmup_s": warm}
    if device.type == "cuda":
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return result


SAMPLERS = ("DDPM-1000", "DDIM-50", "DDGAN-4")


def time_sampling(tiny: bool, device: torch.device, batch: int, fast: FastPath, precision: str,
                  samplers: tuple[str, ...] = SAMPLERS) -> dict:
    """Seconds per 100 images of each of `samplers` at batch `batch` (untrained weights: the cost of a
    sampler does not depend on them)."""
    from distdiff.tasks import LatentSource, Stage2Sampler, build_stage2, sampler_label

    preset = "tiny" if tiny else None
    cfg = load_config(RunConfig, None, [
        "space=pixel", f"ldm.preset={preset or 'ddpm-cifar10'}", f"ddgan.preset={preset or 'ddgan-cifar10'}",
        "ldm.ddim_steps=50"])
    torch.manual_seed(0)
    shape = (3, 32, 32)
    setup = build_stage2(cfg, LatentSource(None), shape, shape, None)
    networks = {}
    for name, member in setup.members.items():
        net = fast.layout(member.networks[member.sampling_network].module.to(device).eval())
        if fast.compile:
            net.compile(**fast.compile_kwargs())
        networks[name] = net
    sampler = Stage2Sampler(setup.spec, LatentSource(None), networks)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    results = {}
    with autocast:
        for model, spec in sampler.default_samplers():
            if not sampler_label(model, spec).endswith(samplers):
                continue
            sampler.warm_up(model, batch)  # also compiles the network for this shape
            _sync(device)
            start = time.perf_counter()
            sampler.sample(model, spec, range(batch))
            _sync(device)
            results[sampler_label(model, spec)] = (time.perf_counter() - start) * 100 / batch
    return results


def run(models: list[str], tiny: bool, device: torch.device, steps: int, warmup: int, sample_batch: int,
        peak: float | None, compile_backend: str, samplers: tuple[str, ...] = SAMPLERS) -> dict:
    """Every model in every setting, then the samplers; the figures as plain data."""
    results = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
               "torch": torch.__version__, "tiny": tiny, "peak_bf16_tflops": peak_tflops(device, peak),
               "training": {}, "sampling": {}}
    peak_flops = results["peak_bf16_tflops"]
    with process_group(device):  # one for the run: DeepSpeed keeps its groups for the process's lifetime
        for name in models:
            results["training"][name] = _train_rows(MODELS[name], tiny, device, steps, warmup, peak_flops,
                                                    compile_backend)
    for setting in settings(compile_backend)[:2]:
        results["sampling"][setting.name] = time_sampling(tiny, device, sample_batch, setting.fast,
                                                          setting.precision, tuple(samplers))
    results["sample_batch"] = sample_batch
    return results


def _train_rows(model: BenchModel, tiny: bool, device: torch.device, steps: int, warmup: int,
                peak_flops: float | None, compile_backend: str) -> dict:
    cfg = model_config(model, tiny, device)
    flops = count_flops_per_image(cfg, model, device)
    rows = {}
    for setting in settings(compile_backend):
        row = time_training(cfg, model, setting, device, steps, warmup)
        row["tflops"] = row["images_per_s"] * flops / 1e12
        row["mfu"] = row["tflops"] / peak_flops if peak_flops else None
        rows[setting.name] = row
    rows["deepspeed-fast"]["ratio_to_plain"] = rows["deepspeed-fast"]["images_per_s"] / rows["fast"]["images_per_s"]
    return {"batch": cfg.stage2.batch_size, "gflop_per_image": flops / 1e9, **rows}


def format_table(results: dict) -> str:
    """The figures as a Markdown table."""
    lines = [f"device: {results['device']}, torch {results['torch']}"
             f"{', tiny presets' if results['tiny'] else ''}", "",
             "| model | setting | batch | images/s | TFLOP/s | MFU | peak GiB | vs plain |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for name, rows in results["training"].items():
        for setting in ("eager-fp32", "fast", "deepspeed-fast"):
            row = rows[setting]
            mfu = f"{100 * row['mfu']:.1f} %" if row.get("mfu") is not None else "n/a"
            memory = f"{row['peak_memory_gib']:.1f}" if "peak_memory_gib" in row else "n/a"
            ratio = f"{row['ratio_to_plain']:.2f}" if "ratio_to_plain" in row else ""
            lines.append(f"| {name} | {setting} | {rows['batch']} | {row['images_per_s']:.1f} | {row['tflops']:.3f} "
                         f"| {mfu} | {memory} | {ratio} |")
    lines += ["", f"| sampler | s per 100 images (batch {results['sample_batch']}) eager-fp32 | fast |",
              "|---|---:|---:|"]
    eager, fast = results["sampling"].get("eager-fp32", {}), results["sampling"].get("fast", {})
    for label in eager:
        lines.append(f"| {label} | {eager[label]:.3f} | {fast.get(label, float('nan')):.3f} |")
    return "\n".join(lines)


def cpu_step(config: str, steps: int, warmup: int, device: torch.device) -> dict:
    """The main job's stage-2 step (its networks, batch and latent shape) with each fast-path switch alone.

    Returns per variant the steady step time, the set-up + warm-up time (compilation lands there) and, for
    a variant faster per step but slower to start, the steps after which it has paid for itself.
    """
    from distdiff.models import build_model
    from distdiff.train.data_source import describe_source

    base = load_config(RunConfig, config, [f"device={device.type}"])
    channels, height, width = describe_source(base.data).image_shape
    vae = build_model("vae", base.vae.preset, in_channels=channels)
    f = vae.downsample_factor
    shape = (vae.model_config["kwargs"]["latent_channels"], height // f, width // f)
    model = BenchModel("both", "", base.stage2.batch_size, shape)
    off = FastPath()
    variants = {"eager (unfused Adam)": off, "fused Adam": replace(off, fused_optimizer=True),
                "channels-last": replace(off, channels_last=True),
                "torch.compile (inductor)": replace(off, compile=True), "bf16 autocast": off}
    rows = {}
    for name, fast in variants.items():
        precision = "bf16" if name == "bf16 autocast" else "fp32"
        rows[name] = time_training(base, model, Setting(name, "torch", fast, precision), device, steps, warmup)
    plain = rows["eager (unfused Adam)"]
    for row in rows.values():
        row["speed_vs_eager"] = plain["step_ms"] / row["step_ms"]
        saved = plain["step_ms"] - row["step_ms"]
        extra = row["setup_and_warmup_s"] - plain["setup_and_warmup_s"]
        row["pays_after_steps"] = (max(0.0, 1000 * extra / saved) if saved > 0 else None)
    return {"config": config, "stage2_steps": base.stage2.steps, "batch": base.stage2.batch_size,
            "latent_shape": list(shape), "steps": steps, "warmup": warmup, "variants": rows}


def format_cpu_step(result: dict) -> str:
    lines = [f"{result['config']}: stage-2 step, batch {result['batch']}, latents {result['latent_shape']}, "
             f"{result['steps']} timed steps after {result['warmup']} (the job runs {result['stage2_steps']})", "",
             "| variant | step ms | vs eager | set-up + warm-up s | pays for itself after |",
             "|---|---:|---:|---:|---:|"]
    for name, row in result["variants"].items():
        pays = row["pays_after_steps"]
        pays = "never" if pays is None else f"{pays:.0f} steps"
        lines.append(f"| {name} | {row['step_ms']:.1f} | {row['speed_vs_eager']:.2f} | "
                     f"{row['setup_and_warmup_s']:.1f} | {pays} |")
    return "\n".join(lines)
