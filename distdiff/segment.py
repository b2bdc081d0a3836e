"""`segment`: overlap-tile segmentation of an image of any size with an exported segmentation U-Net.

    python launch/segment.py --checkpoint runs/seg-mnist-canvas/seg/export/seg_unet --image big.png \\
        --out mask.png [--overlay overlay.png] [--tile 92] [--device cuda]

The mask is a one-channel PNG of class indices (0 = background). The image is read as the network's
channel count (grey or RGB) and mirrored at its border, so every pixel gets a prediction.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segment", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--checkpoint", required=True, help="export stem of a segmentation U-Net (train-seg's export)")
    parser.add_argument("--image", required=True, help="PNG or TIFF image of any size")
    parser.add_argument("--out", required=True, help="where to write the class-index mask (PNG)")
    parser.add_argument("--overlay", help="also write the image with the predicted classes in colour (PNG)")
    parser.add_argument("--tile", type=int, default=0, help="output side of one tile (default: twice the margin)")
    parser.add_argument("--batch-size", type=int, default=16, help="tiles per forward pass")
    parser.add_argument("--device", default="cpu")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch
    from PIL import Image

    from distdiff.models import SegUNet, load_weights
    from distdiff.models.seg_tiling import segment_classes

    stem = Path(args.checkpoint)
    if not Path(f"{stem}.safetensors").is_file():
        print(f"error: no exported weights at {stem}.safetensors", file=sys.stderr)
        return 2
    if not Path(args.image).is_file():
        print(f"error: image {args.image} does not exist", file=sys.stderr)
        return 2
    net, _ = load_weights(stem, map_location=args.device)
    if not isinstance(net, SegUNet):
        print(f"error: {stem} is a {type(net).__name__}, not a segmentation U-Net", file=sys.stderr)
        return 2
    with Image.open(args.image) as img:
        pixels = np.asarray(img.convert("L" if net.in_channels == 1 else "RGB"))
    chw = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)  # (C, H, W)
    image = torch.from_numpy(np.array(chw[None], copy=True))  # (1, C, H, W) uint8: PIL arrays are read-only
    classes = segment_classes(net.eval(), image, args.tile, args.batch_size)[0]  # (H, W)
    Image.fromarray(classes.numpy().astype(np.uint8)).save(args.out)
    print(f"mask of {pixels.shape[1]}x{pixels.shape[0]} pixels written to {args.out} "
          f"(classes present: {sorted(int(c) for c in classes.unique())})")
    if args.overlay:
        from distdiff.images import quantize_to_uint8
        from distdiff.train.seg_stage import overlays

        grey = image[:, :1] if image.shape[1] == 1 else image.float().mean(1, keepdim=True).to(torch.uint8)
        picture = quantize_to_uint8(overlays(grey.numpy(), classes[None]))[0]  # (3, H, W)
        Image.fromarray(picture.permute(1, 2, 0).numpy()).save(args.overlay)
        print(f"overlay written to {args.overlay}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
