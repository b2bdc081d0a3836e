"""Overlap-tile segmentation of images of any size with a valid-convolution U-Net (`SegUNet`).

The image is extended by mirroring at its border (the paper's answer to the missing context there),
cut into overlapping input tiles whose outputs tile the image, and the tile outputs are stitched.
Tiles start at multiples of 2**depth, so every tile's max-pools see the same pixel grid as one pass
over the whole mirrored image would: the stitched result equals that pass wherever both exist, up to
floating-point rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from distdiff.models.seg_unet import SegUNet, input_size_for


def mirror_pad(x: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    """Extend (B, C, H, W) by mirroring at the border (without repeating the edge pixel), any amount.

    Reflection padding needs a pad smaller than the side; a larger one is built by reflecting again.
    """
    pads = [left, right, top, bottom]
    while any(pads):
        h, w = x.shape[-2:]
        step = [min(pads[0], w - 1), min(pads[1], w - 1), min(pads[2], h - 1), min(pads[3], h - 1)]
        if not any(step):
            raise ValueError(f"cannot mirror an image of side 1 (shape {tuple(x.shape)})")
        x = F.pad(x, step, mode="reflect")
        pads = [p - s for p, s in zip(pads, step)]
    return x


TILE_MARGINS = 8  # default tile output side, in margins: inputs then hold (1 + 2/8)^2 = 1.56x the output's pixels


def default_tile_output(net: SegUNet, height: int, width: int) -> int:
    """The tile output side used when none is given: eight margins (so the context the tiles recompute
    costs about half again the pixels they output), or the image's larger side where that is smaller."""
    return min(max(height, width), TILE_MARGINS * net.margin)


def tile_layout(size: int, tile_output: int, depth: int) -> tuple[int, int, int]:
    """How one image side is covered: (stride, number of tiles, padded side beyond the margins).

    The stride is the largest multiple of 2**depth not above the tile's output side, so that every
    tile starts on the pooling grid of the whole image.
    """
    grid = 2 ** depth
    stride = tile_output // grid * grid
    if stride < 1:
        raise ValueError(f"tile output side {tile_output} is below the pooling grid {grid}: use a larger tile")
    count = max(1, -(-(size - tile_output) // stride) + 1) if size > tile_output else 1
    return stride, count, (count - 1) * stride + tile_output


@torch.no_grad()
def segment_overlap_tile(net: SegUNet, images: torch.Tensor, tile_output: int = 0, batch_size: int = 16,
                         ) -> torch.Tensor:
    """Per-pixel class logits of images of any size, stitched from overlapping tiles.

    Args:
        net: a `SegUNet` (its device and dtype are used).
        images: (B, C, H, W), any H, W >= 2.
        tile_output: the output side of one tile, rounded up to a valid one (default:
            `default_tile_output`; a smaller one needs less memory).
        batch_size: tiles per forward pass.

    Returns:
        (B, num_classes, H, W) logits on the images' device.
    """
    depth, margin = net.depth, net.margin
    b, _, height, width = images.shape
    wanted = tile_output or default_tile_output(net, height, width)
    tile_in = input_size_for(max(wanted, 2 ** depth), depth)
    tile_out = tile_in - 2 * margin
    stride_y, rows, span_y = tile_layout(height, tile_out, depth)
    stride_x, cols, span_x = tile_layout(width, tile_out, depth)
    # Margin on every side, and the last tile's overhang past the bottom and right edges.
    padded = mirror_pad(images, margin, margin + span_y - height, margin, margin + span_x - width)
    device = next(net.parameters()).device
    dtype = next(net.parameters()).dtype
    out = torch.empty(b, net.num_classes, span_y, span_x, device=images.device, dtype=dtype)
    origins = [(i, r * stride_y, c * stride_x) for i in range(b) for r in range(rows) for c in range(cols)]
    for start in range(0, len(origins), batch_size):
        chunk = origins[start:start + batch_size]
        tiles = torch.stack([padded[i, :, y:y + tile_in, x:x + tile_in] for i, y, x in chunk])
        logits = net(tiles.to(device=device, dtype=dtype)).to(images.device)  # (n, K, tile_out, tile_out)
        for (i, y, x), tile in zip(chunk, logits):
            out[i, :, y:y + tile_out, x:x + tile_out] = tile
    return out[..., :height, :width]


@torch.no_grad()
def segment_classes(net: SegUNet, images: torch.Tensor, tile_output: int = 0, batch_size: int = 16) -> torch.Tensor:
    """Class maps (N, H, W) of uint8 images (N, C, H, W), scaled to [-1, 1] as in training, by
    overlap-tile inference on the network's device (`tile_output` as in `segment_overlap_tile`)."""
    device = next(net.parameters()).device
    scaled = images.to(device=device, dtype=torch.float32) / 127.5 - 1.0
    return segment_overlap_tile(net, scaled, tile_output, batch_size).argmax(1).cpu()
