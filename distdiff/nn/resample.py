"""FIR up- and downsampling (StyleGAN2's upfirdn2d) in plain PyTorch, as NCSN++ and DDGAN use it.

`upfirdn2d` upsamples by inserting zeros, pads, convolves every channel with a 2-D FIR kernel and
keeps every `down`-th pixel. With the separable kernel [1, 3, 3, 1] (normalised to sum 1, times
factor^2 when upsampling) it gives the anti-aliased resampling of the DDGAN networks: a constant
image stays constant (up to the zero border), and H, W exactly double or halve.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

DEFAULT_FIR = (1, 3, 3, 1)


def fir_kernel(taps: Sequence[float] = DEFAULT_FIR, gain: float = 1.0) -> torch.Tensor:
    """Outer product of a 1-D FIR filter with itself, normalised to sum `gain`.

    Args:
        taps: the 1-D filter (an even length keeps even sizes even after resampling).
        gain: the kernel's sum.

    Returns:
        float32 (K, K) kernel.
    """
    k = torch.as_tensor(taps, dtype=torch.float64)
    if k.ndim != 1 or k.numel() == 0 or float(k.sum()) == 0:
        raise ValueError(f"FIR taps must be a non-empty 1-D sequence with a non-zero sum, got {taps!r}")
    k2 = torch.outer(k, k)
    return (k2 / k2.sum() * gain).to(torch.float32)


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1,
              pad: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Upsample (zero insertion), pad, FIR-filter and downsample each channel of `x`.

    Args:
        x: (B, C, H, W).
        kernel: (K, K) filter, applied as a true convolution (flipped).
        up, down: integer factors.
        pad: (before, after) zero padding of both spatial axes, after upsampling.

    Returns:
        (B, C, (H * up + before + after - K) // down + 1, ... for W).
    """
    b, c, h, w = x.shape
    if up > 1:
        x = x.reshape(b, c, h, 1, w, 1)
        x = F.pad(x, (0, up - 1, 0, 0, 0, up - 1))  # zeros after every pixel, in both axes
        x = x.reshape(b, c, h * up, w * up)
    x = F.pad(x, (pad[0], pad[1], pad[0], pad[1]))
    weight = kernel.flip(0, 1).to(dtype=x.dtype, device=x.device)
    weight = weight[None, None].expand(c, 1, *kernel.shape)  # (C, 1, K, K): one filter per channel
    return F.conv2d(x, weight, stride=down, groups=c)


def fir_upsample(x: torch.Tensor, kernel: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, factor H, factor W) with a kernel summing to factor^2."""
    p = kernel.shape[0] - factor
    return upfirdn2d(x, kernel, up=factor, pad=((p + 1) // 2 + factor - 1, p // 2))


def fir_downsample(x: torch.Tensor, kernel: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H / factor, W / factor) with a kernel summing to 1."""
    p = kernel.shape[0] - factor
    return upfirdn2d(x, kernel, down=factor, pad=((p + 1) // 2, p // 2))


class FIRResample(nn.Module):
    """Parameter-free FIR resampling by 2 ("up" or "down"); the kernel is a buffer, not saved."""

    def __init__(self, direction: str, taps: Sequence[float] = DEFAULT_FIR):
        super().__init__()
        if direction not in ("up", "down"):
            raise ValueError(f"FIRResample direction must be 'up' or 'down', got {direction!r}")
        self.direction = direction
        self.register_buffer("kernel", fir_kernel(taps, gain=4.0 if direction == "up" else 1.0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> (B, C, 2H, 2W) or (B, C, H/2, W/2)."""
        if self.direction == "up":
            return fir_upsample(x, self.kernel)
        return fir_downsample(x, self.kernel)


class FIRDownsampleConv(nn.Module):
    """A 3x3 convolution with stride 2 after a FIR blur: StyleGAN2's fused `conv_downsample_2d`.

    The blur pads by (K - 2 + 2) // 2 on each side so that the valid stride-2 convolution halves H
    and W exactly. NCSN++ uses it for its input pyramid ("progressive_input = residual").

    Args:
        in_ch, out_ch: channels.
        taps: the 1-D FIR filter.
    """

    def __init__(self, in_ch: int, out_ch: int, taps: Sequence[float] = DEFAULT_FIR):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, stride=2, padding=0)
        self.register_buffer("kernel", fir_kernel(taps), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, in_ch, H, W) -> (B, out_ch, H/2, W/2)."""
        p = (self.kernel.shape[0] - 2) + (self.conv.kernel_size[0] - 1)
        return self.conv(upfirdn2d(x, self.kernel, pad=((p + 1) // 2, p // 2)))


class HalvingLevels:
    """For networks whose resolution halves once per level after the first (`channel_mult` lists the
    levels): the factor by which H and W must divide."""

    channel_mult: tuple[int, ...]

    @staticmethod
    def downsampling(channel_mult: Sequence[int]) -> int:
        """The factor by which a network of these widths downsamples (one halving per later level)."""
        return 2 ** (len(channel_mult) - 1)

    @property
    def total_downsampling(self) -> int:
        """H and W must be divisible by this factor."""
        return self.downsampling(self.channel_mult)
