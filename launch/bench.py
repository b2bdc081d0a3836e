"""Benchmark of the core models, measured side by side in one run (ratios, not absolute times).

1. Training images/s of distdiff's `ddpm-cifar10` U-Net against `diffusers.UNet2DModel` built with
   the same architecture (forward + backward + AdamW step, batch 16, 32x32x3). Needs the `bench`
   extra (`pip install -e '.[bench]'`); skipped with a note when diffusers is missing.
2. Sampling seconds per image of DDPM-1000, DDIM-50 and DDGAN-4 on 8x8x4 latents with the trilemma
   study's networks (a U-Net and a DDGAN generator of one size, 1.27 M and 1.26 M; both counts are
   printed), and their ratios against DDPM-1000. Denoising only: a decoder would add the same
   time to each.

Rounds alternate between the contenders so drifting machine load hits both alike.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from distdiff.diffusion import ddgan_sample, ddgan_schedule, ddim_sample, ddpm_sample, ddpm_schedule  # noqa: E402
from distdiff.models import build_model  # noqa: E402


def diffusers_twin(dropout: float = 0.1):
    """diffusers' UNet2DModel configured as the DDPM CIFAR-10 network (ch 128, mult 1,2,2,2, attention at 16x16)."""
    from diffusers import UNet2DModel

    return UNet2DModel(
        sample_size=32, in_channels=3, out_channels=3, block_out_channels=(128, 256, 256, 256),
        layers_per_block=2, dropout=dropout, attention_head_dim=None, norm_num_groups=32,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    )


def train_step_fn(model, batch: int, dtype: torch.dtype, device: torch.device, call):
    """A closure running one forward + backward + AdamW step on random data."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, 32, 32, device=device)
    t = torch.randint(0, 1000, (batch,), device=device)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)

    def step():
        with autocast:
            loss = (call(model, x, t).float() - x).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_alternating(fns: dict, rounds: int, steps: int, device: torch.device) -> dict[str, float]:
    """Best-of-rounds seconds per call of each function, interleaving the contenders."""
    best = {name: float("inf") for name in fns}
    for fn in fns.values():
        fn()  # warm-up (allocations, kernel selection)
    for _ in range(rounds):
        for name, fn in fns.items():
            _sync(device)
            start = time.perf_counter()
            for _ in range(steps):
                fn()
            _sync(device)
            best[name] = min(best[name], (time.perf_counter() - start) / steps)
    return best


def bench_unet(args, device, dtype) -> dict:
    ours = build_model("unet", "ddpm-cifar10").to(device)
    fns = {"distdiff": train_step_fn(ours, args.batch, dtype, device, lambda m, x, t: m(x, t))}
    result = {"distdiff_params_M": sum(p.numel() for p in ours.parameters()) / 1e6}
    try:
        twin = diffusers_twin().to(device)
        fns["diffusers"] = train_step_fn(twin, args.batch, dtype, device, lambda m, x, t: m(x, t).sample)
        result["diffusers_params_M"] = sum(p.numel() for p in twin.parameters()) / 1e6
    except ImportError:
        print("diffusers is not installed (pip install -e '.[bench]'): measuring distdiff alone")
    seconds = time_alternating(fns, args.rounds, args.steps, device)
    for name, s in seconds.items():
        result[f"{name}_images_per_sec"] = args.batch / s
    if "diffusers" in seconds:
        result["ratio_distdiff_over_diffusers"] = seconds["diffusers"] / seconds["distdiff"]
    return result


@torch.no_grad()
def bench_samplers(args, device) -> dict:
    unet = build_model("unet", args.unet_preset, in_channels=4).to(device).eval()
    gen = build_model("ddgan_generator", args.ddgan_preset, in_channels=4, output_activation="none").to(device).eval()
    shape, nz = (args.sample_batch, 4, 8, 8), gen.model_config["kwargs"]["nz"]
    ldm, gan = ddpm_schedule(1000), ddgan_schedule(4)
    fns = {
        "ddpm1000": lambda: ddpm_sample(unet, ldm, shape, device=device),
        "ddim50": lambda: ddim_sample(unet, ldm, shape, steps=50, device=device),
        "ddgan4": lambda: ddgan_sample(gen, gan, shape, nz, device=device),
    }
    seconds = time_alternating(fns, rounds=2, steps=1, device=device)
    result = {f"{k}_seconds_per_image": v / args.sample_batch for k, v in seconds.items()}
    result.update(unet=args.unet_preset, unet_params=sum(p.numel() for p in unet.parameters()),
                  ddgan_generator=args.ddgan_preset, ddgan_generator_params=sum(p.numel() for p in gen.parameters()),
                  batch=args.sample_batch)
    result["speedup_ddim50_vs_ddpm1000"] = seconds["ddpm1000"] / seconds["ddim50"]
    result["speedup_ddgan4_vs_ddpm1000"] = seconds["ddpm1000"] / seconds["ddgan4"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sample-batch", type=int, default=250, help="images per sampler call")
    parser.add_argument("--unet-preset", default="trilemma", help="U-Net of the sampling comparison")
    parser.add_argument("--ddgan-preset", default="trilemma", help="DDGAN generator of the sampling comparison")
    parser.add_argument("--skip-unet", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    report = {"device": str(device), "precision": args.precision, "torch_threads": torch.get_num_threads()}
    if not args.skip_unet:
        report["unet_training"] = bench_unet(args, device, dtype)
    report["sampling"] = bench_samplers(args, device)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
