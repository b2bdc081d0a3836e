"""bench_data: streaming throughput from SeaweedFS vs local disk, and latent shards vs a training step.

    python launch/bench_data.py [--num-workers 2] [--rounds 3] [--vae runs/x/vae/export/vae]

Targets: S3 / local >= 0.9 for image and latent shards; latent stream >= 20x what one stage-2
training step (LDM U-Net + DDGAN generator and discriminator, presets "small", 8x8x4 latents,
batch 64) consumes.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from distdiff.bench.data import BenchSettings, run_data_benchmark  # noqa: E402


def make_stage2_step(batch: dict, device: str = "cpu"):
    """One joint LDM + DDGAN step of the real task code, plain PyTorch engines, on latent batches."""
    import torch

    from distdiff.config import RunConfig
    from distdiff.tasks import LatentSource, build_stage2
    from distdiff.train.engines import EngineSet, TorchEngine

    channels = batch["latent_mean"].shape[1]
    shape = (channels, *batch["latent_mean"].shape[2:])
    # Latent shards carry mean and log-variance: no encoder in the step.
    setup = build_stage2(RunConfig(), LatentSource(None), shape, shape, None)
    engines = EngineSet({name: TorchEngine(net.module.to(device), net.optim, net.optimizer)
                         for name, net in setup.networks.items()})
    task = setup.task
    rng = torch.Generator(device=device).manual_seed(0)
    counter = iter(range(1 << 30))

    def step(cpu_batch: dict) -> None:
        on_device = {k: v.to(device, non_blocking=True) for k, v in cpu_batch.items()}
        task.step(on_device, engines, next(counter), rng)
        if device.startswith("cuda"):
            torch.cuda.synchronize()  # time the step, not its queueing

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-workers", type=int, default=2, help="loader workers of the one rank measured")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5, help="paired local/S3 rounds; medians reported")
    parser.add_argument("--image-epochs", type=int, default=2, help="epochs of the 5,000 images per measurement")
    parser.add_argument("--latent-epochs", type=int, default=10, help="epochs of the 5,000 latents per measurement")
    parser.add_argument("--vae", help="exported VAE weights for the latents (default: 4x average pooling)")
    parser.add_argument("--no-train", action="store_true", help="skip the training-step comparison")
    parser.add_argument("--device", default="cpu", help="device of the training step (e.g. cuda)")
    parser.add_argument("--workdir", help="parent folder for the temporary shards and server data")
    args = parser.parse_args()
    settings = BenchSettings(batch_size=args.batch_size, num_workers=args.num_workers, rounds=args.rounds,
                             image_epochs=args.image_epochs, latent_epochs=args.latent_epochs,
                             vae_weights=args.vae, workdir=args.workdir)
    results = run_data_benchmark(settings, None if args.no_train else lambda b: make_stage2_step(b, args.device))
    for kind in ("images", "latents"):
        r = results[kind]
        print(f"{kind:8s} local {r['local_samples_per_s']:9.0f} samples/s   S3 {r['s3_samples_per_s']:9.0f} samples/s"
              f"   S3/local {r['s3_over_local']:.3f} (target >= 0.9)")
        cpu = r["cpu_seconds_per_1000_samples"]
        print(f"{'':8s} CPU-s per 1000 samples: reader local {cpu['local_reader']:.3f}, reader S3 "
              f"{cpu['s3_reader']:.3f}, S3 server {cpu['s3_server']:.3f} (the server shares these cores)")
    if "train_step_samples_per_s" in results:
        print(f"stage-2 training step consumes {results['train_step_samples_per_s']:.0f} samples/s; latent stream "
              f"from S3 / training = {results['latent_stream_over_train']:.1f}x (target >= 20x)")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
