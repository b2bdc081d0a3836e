"""`make_shards`: write image shards from a dataset on disk, encode latent shards, or check a dataset.

    images   --format cifar10 --input cifar-10-python.tar.gz --dest s3://bucket/cifar10-train
    latents  --source s3://bucket/cifar10-train --dest s3://bucket/cifar10-latents --vae runs/x/vae/export/vae [--ray]
    seg      --input pairs/ (or pairs.zip) --num-classes 3 --dest s3://bucket/cells-train
    check    --source s3://bucket/cifar10-train --world-size 8 --num-workers 4

Destinations are folders or s3://bucket/prefix; the S3 endpoint and credentials come from the
standard AWS chain (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID / AWS_PROFILE, instance roles).
"""

from __future__ import annotations

import argparse
import json
import sys

from distdiff.data.errors import DataError

FORMAT_OPTIONS = {  # which command-line options each converter takes
    "cifar10": ("input", "split"), "mnist": ("input", "split", "pad_to"),
    "stacked-mnist": ("input", "split", "num", "seed", "pad_to"), "celebahq": ("input", "resolution"),
    "image-folder": ("input", "resolution", "channels"), "embedded-mnist": (),
    "embedded-stacked-mnist": ("num", "seed"),
}
RENAMED = {"input": "path"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="make_shards", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    images = sub.add_parser("images", help="convert a dataset into image shards")
    images.add_argument("--format", required=True, choices=sorted(FORMAT_OPTIONS))
    images.add_argument("--input", help="file or folder of the dataset (not for embedded formats)")
    images.add_argument("--dest", required=True, help="folder or s3://bucket/prefix")
    images.add_argument("--split", default="train", choices=["train", "test"])
    images.add_argument("--resolution", type=int, help="resize + centre-crop to this size (celebahq, image-folder)")
    images.add_argument("--channels", type=int, default=3, choices=[1, 3], help="image-folder colour channels")
    images.add_argument("--num", type=int, help="images to draw (stacked MNIST)")
    images.add_argument("--seed", type=int, help="draw seed (stacked MNIST)")
    images.add_argument("--pad-to", type=int, help="MNIST digits are zero-padded to this size (default 32)")
    images.add_argument("--shard-size", type=int, default=1000, help="samples per shard")
    images.add_argument("--limit", type=int, help="write only the first N samples")
    images.add_argument("--overwrite", action="store_true", help="replace a dataset already at --dest")

    latents = sub.add_parser("latents", help="encode image shards into latent shards with a trained VAE")
    latents.add_argument("--source", required=True, help="image shard dataset")
    latents.add_argument("--dest", required=True, help="where the latent shards go")
    latents.add_argument("--vae", required=True, help="exported VAE weights (.safetensors + .json)")
    latents.add_argument("--device", default="cpu")
    latents.add_argument("--batch-size", type=int, default=64)
    latents.add_argument("--shards-per-task", type=int, default=4)
    latents.add_argument("--ray", action="store_true", help="fan out over Ray tasks")
    latents.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    latents.add_argument("--num-gpus", type=float, default=0, help="GPUs per Ray task")
    latents.add_argument("--overwrite", action="store_true")

    seg = sub.add_parser("seg", help="convert image / mask pairs into segmentation shards (for train-seg)",
                         description="Pairs are images/NAME.png|tif|tiff and masks/NAME.png|tif|tiff in a folder "
                                     "or a zip; a mask is one channel of class indices (0: background) of its "
                                     "image's size. Every pair is checked before the manifest is written.")
    seg.add_argument("--input", required=True, help="folder or .zip of images/ and masks/")
    seg.add_argument("--dest", required=True, help="folder or s3://bucket/prefix")
    seg.add_argument("--num-classes", type=int, required=True, help="classes, background included")
    seg.add_argument("--channels", type=int, default=1, choices=[1, 3], help="image colour channels")
    seg.add_argument("--shard-size", type=int, default=100, help="pairs per shard")
    seg.add_argument("--limit", type=int, help="write only the first N pairs")
    seg.add_argument("--overwrite", action="store_true", help="replace a dataset already at --dest")

    check = sub.add_parser("check", help="preflight a dataset for a number of ranks and loader workers")
    check.add_argument("--source", required=True)
    check.add_argument("--world-size", type=int, default=1)
    check.add_argument("--num-workers", type=int, default=0)
    check.add_argument("--batch-size", type=int)
    return parser


def make_image_shards(args: argparse.Namespace):
    """Convert the dataset named by the arguments into image shards at `args.dest`."""
    from distdiff.data.formats import CONVERTERS
    from distdiff.data.writer import write_image_shards

    kwargs = {RENAMED.get(k, k): getattr(args, k) for k in FORMAT_OPTIONS[args.format] if getattr(args, k) is not None}
    if "input" in FORMAT_OPTIONS[args.format] and args.input is None:
        raise DataError(f"--input is required for --format {args.format}")
    source = CONVERTERS[args.format](**kwargs)
    return write_image_shards(source, args.dest, args.shard_size, args.overwrite, args.limit)


def make_latent_shards(args: argparse.Namespace):
    """Encode `args.source` into latent shards at `args.dest`, locally or over Ray."""
    from distdiff.data.latents import encode_latent_shards
    from distdiff.tasks import VAEEncoder

    encoder = VAEEncoder(args.vae, args.device)
    if args.ray:
        from distdiff.launchers.ray_encode import encode_latents_with_ray

        return encode_latents_with_ray(args.source, args.dest, encoder, args.batch_size, args.overwrite,
                                       args.shards_per_task, address=args.address, num_gpus=args.num_gpus)
    return encode_latent_shards(args.source, args.dest, encoder, args.batch_size, args.overwrite, args.shards_per_task)


def main(argv: list[str] | None = None) -> int:
    """Run one make_shards command; errors print one clear line and return 2."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "images":
            manifest = make_image_shards(args)
        elif args.command == "latents":
            manifest = make_latent_shards(args)
        elif args.command == "seg":
            from distdiff.data.seg_shards import write_seg_shards

            manifest = write_seg_shards(args.input, args.dest, args.num_classes, args.channels, args.shard_size,
                                        args.overwrite, args.limit)
        else:
            from distdiff.data.source import preflight

            manifest = preflight(args.source, args.world_size, args.num_workers, args.batch_size)
    except (DataError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    summary = {"kind": manifest.kind, "samples": manifest.num_samples, "shards": len(manifest.shards),
               "dataset_hash": manifest.dataset_hash,
               "meta": {k: v for k, v in manifest.meta.items() if k not in ("image", "class_names")}}
    print(json.dumps(summary, indent=1))
    return 0
