"""`segment`: overlap-tile segmentation of an image of any size with an exported segmentation U-Net.

    python launch/segment.py --checkpoint runs/seg-mnist-canvas/seg/export/seg_unet --image big.png \\
        --out mask.png [--overlay overlay.png] [--tile 92] [--device cuda]
    python launch/segment.py --checkpoint runs/seg-mnist-canvas/seg/export/seg_unet --canvas 512 \\
        --out mask.png --overlay overlay.png        # a held-out digit canvas, scored against its truth

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
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", help="PNG or TIFF image of any size")
    source.add_argument("--canvas", type=int, metavar="SIDE",
                        help="instead of an image: a SIDE x SIDE canvas of held-out embedded digits (as dense as "
                             "the default training canvases), also written as canvas.png beside --out and "
                             "scored against its true mask")
    parser.add_argument("--out", required=True, help="where to write the class-index mask (PNG)")
    parser.add_argument("--overlay", help="also write the image with the predicted classes in colour (PNG)")
    parser.add_argument("--tile", type=int, default=0,
                        help="output side of one tile (default: eight margins, or the whole image if smaller; a "
                             "smaller tile needs less memory)")
    parser.add_argument("--batch-size", type=int, default=16, help="tiles per forward pass")
    parser.add_argument("--device", default="cpu")
    return parser


def _read_image(path: str, channels: int) -> np.ndarray:
    """uint8 (C, H, W), converted to the network's channel count."""
    from PIL import Image

    from distdiff.data.seg_pairs import image_array

    with Image.open(path) as img:
        return image_array(img, channels)


def _held_out_canvas(side: int, channels: int, picture: Path) -> tuple[np.ndarray, np.ndarray]:
    """A canvas of held-out digits, (C, side, side) uint8, and its true mask (side, side); saved to `picture`."""
    from PIL import Image

    from distdiff.config import SegConfig
    from distdiff.data.seg_canvas import make_digit_canvases

    density = (side / 256) ** 2  # digits per pixel as on 256 x 256 canvases with seg.digits' default
    digits = tuple(max(1, round(n * density)) for n in SegConfig().digits)
    canvas = make_digit_canvases(1, side, digits, "test", seed=0)
    Image.fromarray(canvas.images[0, 0]).save(picture)
    print(f"held-out canvas of {side}x{side} pixels with {digits[0]}-{digits[1]} digits written to {picture}")
    return canvas.images[0].repeat(channels, 0), canvas.masks[0]


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
    if args.image and not Path(args.image).is_file():
        print(f"error: image {args.image} does not exist", file=sys.stderr)
        return 2
    if args.canvas is not None and args.canvas < 28:
        print(f"error: --canvas {args.canvas} is smaller than a 28 x 28 digit", file=sys.stderr)
        return 2
    net, _ = load_weights(stem, map_location=args.device)
    if not isinstance(net, SegUNet):
        print(f"error: {stem} is a {type(net).__name__}, not a segmentation U-Net", file=sys.stderr)
        return 2
    if args.canvas is not None:
        chw, truth = _held_out_canvas(args.canvas, net.in_channels, Path(args.out).with_name("canvas.png"))
    else:
        chw, truth = _read_image(args.image, net.in_channels), None
    image = torch.from_numpy(np.array(chw[None], copy=True))  # (1, C, H, W) uint8: PIL arrays are read-only
    classes = segment_classes(net.eval(), image, args.tile, args.batch_size)[0]  # (H, W)
    Image.fromarray(classes.numpy().astype(np.uint8)).save(args.out)
    print(f"mask of {chw.shape[2]}x{chw.shape[1]} pixels written to {args.out} "
          f"(classes present: {sorted(int(c) for c in classes.unique())})")
    if truth is not None:
        from distdiff.eval.seg_metrics import confusion_matrix, mean_iou, pixel_accuracy

        confusion = confusion_matrix(classes, torch.from_numpy(truth), net.num_classes)
        print(f"against the canvas's true mask: pixel accuracy {pixel_accuracy(confusion):.4f}, "
              f"mean IoU {mean_iou(confusion):.4f}")
    if args.overlay:
        from distdiff.images import quantize_to_uint8
        from distdiff.train.seg_stage import overlays

        picture = quantize_to_uint8(overlays(image.numpy(), classes[None]))[0]  # (3, H, W)
        Image.fromarray(picture.permute(1, 2, 0).numpy()).save(args.overlay)
        print(f"overlay written to {args.overlay}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
