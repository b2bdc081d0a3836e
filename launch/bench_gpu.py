"""The GPU fast path measured: training images/s, TFLOP/s and MFU, distdiff's engine against plain PyTorch,
and sampling time per 100 images.

    python launch/bench_gpu.py                           # ddpm-cifar10 and ddgan-cifar10 on the GPU
    python launch/bench_gpu.py --json bench-gpu.json --peak-tflops 989
    python launch/bench_gpu.py --tiny --device cpu        # tiny presets: the whole path in a minute on a CPU
    python launch/bench_gpu.py --cpu-step                 # the main job's stage-2 step with each switch alone

Settings, side by side in one process: eager-fp32 (plain PyTorch), fast (plain PyTorch with bf16 autocast,
channels-last, torch.compile, fused Adam(W), TF32) and deepspeed-fast (distdiff's DeepSpeed ZeRO-2 engine,
bf16, the same switches). MFU is against the device's dense bf16 peak (--peak-tflops to set it).
"""

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from distdiff.bench.gpu import MODELS, SAMPLERS, cpu_step, format_cpu_step, format_table, run  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--device", default="auto", help="auto (cuda when present), cuda or cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny presets and batch 4 (a CPU check of the path)")
    parser.add_argument("--steps", type=int, default=30, help="timed training steps per setting")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first (compilation happens there)")
    parser.add_argument("--sample-batch", type=int, default=100, help="images per sampling batch")
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=list(SAMPLERS),
                        help="the samplers to time")
    parser.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak for MFU (default: by name)")
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend (aot_eager: no codegen)")
    parser.add_argument("--cpu-step", action="store_true",
                        help="instead: the main job's stage-2 step with each switch alone (CPU by default)")
    parser.add_argument("--config", default="configs/mnist-embedded.yaml", help="the job of --cpu-step")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    if min(args.steps, args.sample_batch) < 1 or args.warmup < 1:
        parser.error("--steps, --warmup and --sample-batch must be >= 1")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    if args.cpu_step:
        results = cpu_step(args.config, args.steps, args.warmup, device)
        print(format_cpu_step(results))
    else:
        results = run(args.models, args.tiny, device, args.steps, args.warmup, args.sample_batch, args.peak_tflops,
                      args.compile_backend, tuple(args.samplers))
        print(format_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
