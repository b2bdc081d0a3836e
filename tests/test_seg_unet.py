"""The segmentation U-Net: its size arithmetic, the paper's network, and overlap-tile inference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distdiff.models import build_model
from distdiff.models.seg_tiling import mirror_pad, segment_overlap_tile, tile_layout
from distdiff.models.seg_unet import input_size_for, margin, nearest_valid_size, output_size, valid_input_sizes


def test_size_arithmetic_of_the_paper_network():
    assert output_size(572, 4) == 388  # the paper's Fig. 1
    assert input_size_for(388, 4) == 572 and input_size_for(380, 4) == 572
    assert margin(4) == 92
    assert output_size(573, 4) is None and output_size(570, 4) is None  # a max-pool would get an odd side
    assert output_size(172, 4) is None  # too small: the bottom level would vanish
    assert valid_input_sizes(4, 240) == [188, 204, 220, 236]
    assert (nearest_valid_size(575, 4), nearest_valid_size(579, 4), nearest_valid_size(10, 4)) == (572, 572, 188)
    for depth in (1, 2, 3, 4):
        sizes = valid_input_sizes(depth, 300)
        assert all(output_size(s, depth) == s - 2 * margin(depth) for s in sizes)
        assert {b - a for a, b in zip(sizes, sizes[1:])} == {2 ** depth}


def test_the_paper_preset_has_the_papers_layers():
    net = build_model("seg_unet", "unet-seg-paper")
    widths = [64, 128, 256, 512, 1024]

    def conv(cin, cout, k):
        return cin * cout * k * k + cout

    expected = conv(1, 64, 3) + conv(64, 64, 3)
    for cin, cout in zip(widths, widths[1:]):  # contracting path and bottom
        expected += conv(cin, cout, 3) + conv(cout, cout, 3)
    for cin, cout in zip(widths[::-1], widths[-2::-1]):  # up-convolution, then two convolutions
        expected += conv(cin, cout, 2) + conv(2 * cout, cout, 3) + conv(cout, cout, 3)
    expected += conv(64, 2, 1)
    count = sum(p.numel() for p in net.parameters())
    print(f"unet-seg-paper: {count:,} parameters")
    assert count == expected == 31_030_658


def test_forward_refuses_an_invalid_side_naming_the_nearest_valid_one():
    net = build_model("seg_unet", "tiny")
    assert net(torch.randn(1, 1, 48, 52)).shape == (1, 11, 8, 12)
    with pytest.raises(ValueError, match="input side 50 is not valid .* nearest valid side is 52"):
        net(torch.randn(1, 1, 50, 48))


def test_mirror_padding_beyond_the_image_side_matches_numpy():
    x = torch.arange(12, dtype=torch.float64).reshape(1, 1, 3, 4)
    padded = mirror_pad(x, 5, 2, 7, 1)
    expected = np.pad(x.numpy(), ((0, 0), (0, 0), (5, 2), (7, 1)), mode="reflect")
    np.testing.assert_array_equal(padded.numpy(), expected)


def test_tile_layout_starts_every_tile_on_the_pooling_grid():
    stride, count, span = tile_layout(100, 12, depth=2)
    assert (stride, count, span) == (12, 9, 108)
    stride, count, span = tile_layout(30, 10, depth=3)
    assert stride == 8 and (count - 1) * stride + 10 >= 30 and span == (count - 1) * stride + 10
    with pytest.raises(ValueError, match="below the pooling grid"):
        tile_layout(30, 3, depth=2)


@pytest.mark.parametrize("depth,tile_output", [(2, 4), (2, 12), (2, 0), (3, 12), (3, 0)])
def test_overlap_tile_output_equals_one_pass_over_the_mirrored_image(depth, tile_output):
    # Depth 3 has tile outputs (12, 20, ...) that are not multiples of its pooling grid (8): the tiles
    # then overlap so that each starts on the grid.
    torch.manual_seed(0)
    net = build_model("seg_unet", "tiny", depth=depth).double().eval()
    image = torch.randn(2, 1, 37, 50, dtype=torch.float64)  # sides that are not multiples of anything
    stitched = segment_overlap_tile(net, image, tile_output=tile_output, batch_size=5)
    assert stitched.shape == (2, 11, 37, 50)
    # One pass over the same mirrored extension: every side of it is a valid input by construction.
    m = net.margin
    tile_out = input_size_for(max(tile_output or 2 * m, 4), net.depth) - 2 * m
    _, _, span_y = tile_layout(37, tile_out, net.depth)
    _, _, span_x = tile_layout(50, tile_out, net.depth)
    whole = net(mirror_pad(image, m, m + span_y - 37, m, m + span_x - 50))
    torch.testing.assert_close(stitched, whole[..., :37, :50], rtol=1e-10, atol=1e-10)
