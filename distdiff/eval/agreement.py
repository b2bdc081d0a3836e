"""Prompt agreement: how often the MNIST classifier reads the digit a caption asked for.

For each class prompt an export records ("a handwritten zero" ... "a handwritten nine"), draw
`per_class` samples at each guidance scale and classify them with distdiff's MNIST classifier (the
one behind FD-MNIST). Sample seeds depend on the class and the index only, so every scale sees the
same starting noise.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch


def prompt_agreement(checkpoint: str, scales: list[float], per_class: int = 50, sampler: str = "ldm:ddim",
                     batch_size: int = 100, device: str = "cpu") -> dict:
    """Share of samples the classifier assigns to the prompted class, per guidance scale.

    Args:
        checkpoint: a text- or class-conditional stage-2 export of single-channel digits.
        scales: guidance scales to measure.
        per_class: samples per class prompt and scale.
        sampler: MODEL:SAMPLER[:STEPS] (see `distdiff.tasks.select_samplers`).
        batch_size: samples per draw.
        device: where the networks run.

    Returns:
        {"scales": {scale: {"agreement", "per_class", "seconds"}}, "sampler", "samples_per_scale"}.
    """
    from distdiff.eval.checkpoint import EvalCheckpoint
    from distdiff.eval.classifier import embedded_classifier, load_classifier, predict_digits
    from distdiff.images import quantize_to_uint8

    export = EvalCheckpoint(checkpoint, sampler)
    draw = export.build_sampler(device)
    classes = draw.num_conditions
    if classes is None:
        raise ValueError(f"{checkpoint} is unconditional: prompt agreement needs prompts or labels")
    classifier, _ = load_classifier(embedded_classifier())
    model, settings = export.selection[0]
    labels = torch.arange(classes).repeat_interleave(per_class)  # (classes * per_class,)
    seeds = [int(c) * 100_000 + i % per_class for i, c in enumerate(labels.tolist())]
    out = {"sampler": sampler, "samples_per_scale": len(labels), "scales": {}}
    for scale in scales:
        start, predicted = time.perf_counter(), []
        for s in range(0, len(labels), batch_size):
            batch = labels[s : s + batch_size].to(device)
            images = draw.sample(model, settings, seeds[s : s + batch_size], batch, guidance=scale)
            predicted.append(predict_digits(classifier, quantize_to_uint8(images)))
        hits = torch.cat(predicted) == labels  # (N,)
        out["scales"][str(scale)] = {
            "agreement": float(hits.float().mean()),
            "per_class": [float(h.float().mean()) for h in hits.view(classes, per_class)],
            "seconds": time.perf_counter() - start,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="prompt_agreement", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="stage-2 export of a conditional U-Net on digits")
    parser.add_argument("--guidance", type=float, nargs="+", default=[1.0, 3.0], help="guidance scales")
    parser.add_argument("--per-class", type=int, default=50, help="samples per class prompt and scale")
    parser.add_argument("--sampler", default="ldm:ddim", help="MODEL:SAMPLER[:STEPS]")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", help="also write the result as JSON here")
    args = parser.parse_args(argv)
    result = prompt_agreement(args.checkpoint, args.guidance, args.per_class, args.sampler, device=args.device)
    for scale, row in result["scales"].items():
        print(f"guidance {scale}: {row['agreement']:.3f} of {result['samples_per_scale']} samples read as the "
              f"prompted digit ({row['seconds']:.0f} s)")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
