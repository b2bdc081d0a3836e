"""Overlap-tile segmentation against one pass over the same mirrored image, side by side.

Both produce the same logits (the tiles start on the pooling grid); the tiles recompute the context
their inputs share, which costs time, and in exchange bound the memory a large image needs. Rounds
alternate the two ways so that load from other processes hits both alike; the medians are compared.
"""

from __future__ import annotations

import statistics
import time

import torch

from distdiff.models import build_model
from distdiff.models.seg_tiling import default_tile_output, mirror_pad, segment_overlap_tile, tile_layout
from distdiff.models.seg_unet import input_size_for


def run_benchmark(preset: str = "small", side: int = 1024, tile: int = 0, rounds: int = 3, batch_size: int = 8,
                  device: str = "cpu", log=print) -> dict:
    """Seconds for `side` x `side` by tiles and in one pass (median of `rounds`), their ratio and the
    largest difference of the logits."""
    torch.manual_seed(0)
    net = build_model("seg_unet", preset).to(device).eval()
    image = torch.rand(1, net.in_channels, side, side, device=device) * 2 - 1
    m = net.margin
    tile_out = input_size_for(max(tile or default_tile_output(net, side, side), 2 ** net.depth), net.depth) - 2 * m
    _, count, span = tile_layout(side, tile_out, net.depth)
    whole_input = mirror_pad(image, m, m + span - side, m, m + span - side)

    def tiled():
        return segment_overlap_tile(net, image, tile_out, batch_size)

    def one_pass():
        with torch.no_grad():
            return net(whole_input)[..., :side, :side]

    difference = float((tiled() - one_pass()).abs().max())  # also the untimed warm-up of both
    times = {"tiles": [], "one_pass": []}
    for _ in range(rounds):
        for name, fn in (("tiles", tiled), ("one_pass", one_pass)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    result = {"preset": preset, "side": side, "tile_output": tile_out, "tiles": count * count,
              "tiles_s": statistics.median(times["tiles"]), "one_pass_s": statistics.median(times["one_pass"]),
              "max_abs_difference": difference}
    result["ratio"] = result["tiles_s"] / result["one_pass_s"]
    log(f"{side}x{side}, {preset}: {count * count} tiles of {tile_out} px: {result['tiles_s']:.2f} s; one pass "
        f"{result['one_pass_s']:.2f} s; ratio {result['ratio']:.2f} (largest logit difference {difference:.2e})")
    return result
