"""The segmentation U-Net of Ronneberger, Fischer and Brox (MICCAI 2015), and its size arithmetic.

A contracting path of `depth` levels (two unpadded 3x3 convolutions with ReLU, then a 2x2 max-pool
that halves the size while the next level doubles the channels), a bottom level, and a symmetric
expanding path (a 2x2 up-convolution that doubles the size and halves the channels, the contracting
path's features of that level centre-cropped and concatenated, two unpadded 3x3 convolutions), then a
1x1 convolution to the classes. Every convolution is "valid": each output pixel sees its whole
receptive field, so the output is smaller than the input by a fixed margin and a large image can be
segmented tile by tile with the same result as in one pass (`segment_overlap_tile` in `seg_tiling.py`).

With the paper's sizes (depth 4, 64 channels at the top) a 572 x 572 input gives a 388 x 388 output.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from distdiff.models.config import records_config

_CONV_LOSS = 4  # two unpadded 3x3 convolutions remove 2 pixels from each side


def output_size(input_size: int, depth: int) -> int | None:
    """The output side of a U-Net of `depth` levels for an input side, or None where it is not valid.

    An input is valid when every max-pool receives an even side and every level keeps at least one pixel.
    """
    size = input_size
    for _ in range(depth):
        size -= _CONV_LOSS
        if size <= 0 or size % 2:
            return None
        size //= 2
    size -= _CONV_LOSS  # the bottom level
    for _ in range(depth):
        if size <= 0:
            return None
        size = size * 2 - _CONV_LOSS
    return size if size > 0 else None


def input_size_for(min_output: int, depth: int) -> int:
    """The smallest valid input side whose output side is at least `min_output`."""
    # Walk the expanding path backwards from the output to the bottom, rounding up to whole pixels.
    size = max(1, min_output)
    for _ in range(depth):
        size = math.ceil((size + _CONV_LOSS) / 2)
    size += _CONV_LOSS
    for _ in range(depth):
        size = size * 2 + _CONV_LOSS
    assert output_size(size, depth) is not None and output_size(size, depth) >= min_output
    return size


def valid_input_sizes(depth: int, up_to: int) -> list[int]:
    """Every valid input side up to `up_to`, ascending (they are 2**depth apart)."""
    return [s for s in range(1, up_to + 1) if output_size(s, depth) is not None]


def nearest_valid_size(size: int, depth: int) -> int:
    """The valid input side closest to `size` (the larger one on a tie)."""
    smallest = input_size_for(1, depth)
    if size <= smallest:
        return smallest
    step = 2 ** depth  # valid sides above the smallest are this far apart
    below = smallest + (size - smallest) // step * step
    return below if size - below < below + step - size else below + step


def margin(depth: int) -> int:
    """The pixels lost on each side between input and output (the same for every valid input)."""
    size = input_size_for(1, depth)
    return (size - output_size(size, depth)) // 2


def center_crop(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The central (height, width) window of (B, C, H, W) features."""
    top, left = (x.shape[-2] - height) // 2, (x.shape[-1] - width) // 2
    return x[..., top:top + height, left:left + width]


class _DoubleConv(nn.Sequential):
    def __init__(self, cin: int, cout: int, batch_norm: bool):
        layers: list[nn.Module] = []
        for c in (cin, cout):
            layers.append(nn.Conv2d(c, cout, 3, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class SegUNet(nn.Module):
    """The segmentation U-Net: (B, in_channels, S, S) -> (B, num_classes, S - 2 margin, S - 2 margin)
    logits, for a valid side S (`output_size`); rectangular inputs work side by side alike.

    Args:
        in_channels: image channels.
        num_classes: classes of the per-pixel classifier (background included).
        base_channels: channels of the top level (the paper: 64), doubled at each level down.
        depth: number of max-pools (the paper: 4).
        batch_norm: a BatchNorm after each convolution (not in the paper; helps short CPU runs).
        dropout: dropout before the bottom level's convolutions (the paper's "drop-out layers at the
            end of the contracting path").
    """

    @records_config("seg_unet")
    def __init__(self, in_channels: int = 1, num_classes: int = 2, base_channels: int = 64, depth: int = 4,
                 batch_norm: bool = False, dropout: float = 0.0):
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.in_channels, self.num_classes, self.depth = in_channels, num_classes, depth
        widths = [base_channels * 2 ** level for level in range(depth + 1)]  # top ... bottom
        self.down = nn.ModuleList()
        cin = in_channels
        for width in widths[:-1]:
            self.down.append(_DoubleConv(cin, width, batch_norm))
            cin = width
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.bottom = _DoubleConv(widths[-2], widths[-1], batch_norm)
        self.up = nn.ModuleList()
        self.up_conv = nn.ModuleList()
        for level in range(depth - 1, -1, -1):
            self.up_conv.append(nn.ConvTranspose2d(widths[level + 1], widths[level], 2, stride=2))
            self.up.append(_DoubleConv(2 * widths[level], widths[level], batch_norm))
        self.classify = nn.Conv2d(widths[0], num_classes, 1)
        self._init_weights()

    def _init_weights(self) -> None:
        # The paper draws weights from N(0, sqrt(2 / N)), N the inputs of one unit (He et al.).
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu",
                                        mode="fan_in" if isinstance(m, nn.Conv2d) else "fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @property
    def margin(self) -> int:
        """Pixels lost on each side between the input and the output."""
        return margin(self.depth)

    def output_size(self, input_size: int) -> int | None:
        """The output side for an input side, None where the input side is not valid."""
        return output_size(input_size, self.depth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for side in x.shape[-2:]:
            if self.output_size(side) is None:
                raise ValueError(f"input side {side} is not valid for a depth-{self.depth} U-Net (each max-pool "
                                 f"needs an even side); the nearest valid side is {nearest_valid_size(side, self.depth)}")
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottom(self.dropout(x))
        for up_conv, block, skip in zip(self.up_conv, self.up, reversed(skips)):
            x = up_conv(x)  # (B, C_level, 2h, 2w)
            x = block(torch.cat([center_crop(skip, *x.shape[-2:]), x], dim=1))
        return self.classify(x)
