"""`sample`: draw images from a trained stage-2 export, or edit an image with it.

    python launch/sample.py --checkpoint runs/mnist-text/ldm/export --prompt "a handwritten seven" \\
        --guidance 3 --num 16 --out samples/                              # text-to-image
    python launch/sample.py --checkpoint runs/mnist-embedded --label 7 --sampler ddim --steps 50
    (--label on a text-conditioned model draws the prompt its export records for that class)
    python launch/sample.py --checkpoint runs/mnist-embedded --sampler ddgan --num 64
    python launch/sample.py --checkpoint EXPORT --init-image in.png --strength 0.6      # image-to-image
    python launch/sample.py --checkpoint EXPORT --init-image in.png --mask mask.png     # inpainting

Image-to-image (SDEdit) encodes the init image, noises it to the step that --strength names (the
last strength * n of the sampler's n steps run; for the DDGAN one of its T steps) and denoises.
Inpainting keeps the init image where the mask is black, re-noised to every step, and generates
where it is white, in latent space; --strength (default 1) applies to it too. The checkpoint is an
export folder, a run folder, or an s3:// prefix of either. Writes grid.png and one PNG per sample
(sample-<seed>.png) into --out.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

SAMPLER_MODELS = {"ddpm": "diffusion", "ddim": "diffusion", "ddgan": "ddgan"}  # sampler -> model kind


class SampleError(ValueError):
    """A bad request: the message names the input at fault."""


@dataclass
class Request:
    """What to draw (the command line's arguments, checked by `generate`)."""

    checkpoint: str
    sampler: str = "ddim"
    model: str | None = None
    steps: int | None = None
    num: int = 16
    seed: int = 0
    label: int | None = None
    prompt: str | None = None
    guidance: float | None = None
    init_image: str | None = None
    strength: float | None = None
    mask: str | None = None
    device: str = "cpu"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sample", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--checkpoint", required=True, help="stage-2 export folder, run folder, or s3:// prefix")
    parser.add_argument("--out", default="samples", help="output folder (grid.png, sample-<seed>.png)")
    parser.add_argument("--sampler", choices=sorted(SAMPLER_MODELS), default="ddim",
                        help="ddpm or ddim drive the U-Net, ddgan the DDGAN generator (default ddim)")
    parser.add_argument("--model", help="which model of the export when several fit the sampler (e.g. gan)")
    parser.add_argument("--steps", type=int, help="DDIM steps (default: the export's)")
    parser.add_argument("--num", type=int, default=16, help="number of samples")
    parser.add_argument("--seed", type=int, default=0, help="sample i uses seed + i")
    condition = parser.add_mutually_exclusive_group()
    condition.add_argument("--label", type=int,
                           help="class label (a text-conditioned U-Net takes its recorded prompt of the class)")
    condition.add_argument("--prompt", help="caption for a text-conditioned U-Net")
    parser.add_argument("--guidance", type=float, help="classifier-free guidance scale (default: the export's)")
    parser.add_argument("--init-image", help="image to start from (image-to-image, inpainting); the model's size")
    parser.add_argument("--strength", type=float,
                        help="image-to-image strength in [0, 1] (default 0.6; 1 with --mask)")
    parser.add_argument("--mask", help="inpainting mask (PNG, the init image's size): white = generate")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    return parser


def _choose(spec, request: Request):
    """(model spec, sampler selection string) for the request, against what the export holds."""
    kind = SAMPLER_MODELS[request.sampler]
    fits = [m for m in spec.models if m.kind == kind]
    if request.model is not None:
        fits = [m for m in fits if m.name == request.model]
    if not fits:
        held = ", ".join(f"{m.name} ({m.kind})" for m in spec.models)
        wanted = f"model {request.model!r} of kind {kind}" if request.model else f"a {kind} model"
        raise SampleError(f"--sampler {request.sampler} needs {wanted}; the export holds {held}")
    model = fits[0]
    if request.steps is not None and request.sampler != "ddim":
        raise SampleError(f"--steps applies to ddim only; {request.sampler} runs every step of its schedule")
    steps = f":{request.steps}" if request.steps is not None else ""
    return model, f"{model.name}:{request.sampler}{steps}"


def _conditioning(spec, model, request: Request) -> dict:
    """Keyword arguments of `Stage2Sampler.sample` for the label or prompt (checked against the model)."""
    diffusion = model.kind == "diffusion"
    text = diffusion and spec.text is not None
    classes = (len(spec.text["class_prompts"]) or None) if text else spec.num_classes if diffusion else None
    where = f"model {model.name!r} of {request.checkpoint}"
    if request.prompt is not None and not text:
        raise SampleError(f"--prompt given, but {where} is not text-conditioned")
    if request.label is not None and classes is None:
        raise SampleError(f"--label given, but {where} is not class-conditional")
    if request.guidance is not None and not (text or classes):
        raise SampleError(f"--guidance given, but {where} is unconditional")
    out: dict = {"guidance": request.guidance} if (text or classes) else {}
    if request.prompt is not None:
        from distdiff.text import Tokenizer

        try:
            Tokenizer.from_record(spec.text).encode([request.prompt])
        except ValueError as err:
            raise SampleError(f"--prompt: {err}") from None
        out["prompts"] = [request.prompt] * request.num
    elif classes is not None:
        if request.label is None:
            out["labels"] = torch.arange(request.num) % classes  # every class in turn
        elif not 0 <= request.label < classes:
            raise SampleError(f"--label {request.label} is outside [0, {classes})")
        else:  # a text model draws the record's prompt of that class
            out["labels"] = torch.full((request.num,), request.label, dtype=torch.int64)
    return out


def _read_picture(path: str, what: str, mode: str, shape: tuple[int, int]):
    """A PIL image of `path` converted to `mode`, checked to be `shape` (H, W)."""
    from PIL import Image, UnidentifiedImageError

    if not Path(path).is_file():
        raise SampleError(f"{what} {path} does not exist")
    try:
        with Image.open(path) as img:
            picture = img.convert(mode)
    except (UnidentifiedImageError, OSError) as err:
        raise SampleError(f"{what} {path} is not a readable image: {err}") from None
    if (picture.height, picture.width) != tuple(shape):
        raise SampleError(f"{what} {path} is {picture.width}x{picture.height} pixels; the model makes "
                          f"{shape[1]}x{shape[0]} images")
    return picture


def read_init_image(path: str, image_shape: tuple[int, int, int]) -> torch.Tensor:
    """(1, C, H, W) in [-1, 1] from an image file of the model's size."""
    channels, height, width = image_shape
    picture = _read_picture(path, "init image", "L" if channels == 1 else "RGB", (height, width))
    array = np.asarray(picture, dtype=np.float32)
    array = array[None] if channels == 1 else array.transpose(2, 0, 1)  # (C, H, W)
    return torch.from_numpy(array.copy())[None] / 127.5 - 1.0


def read_mask(path: str, image_shape: tuple[int, int, int]) -> torch.Tensor:
    """(1, 1, H, W) float, 1 = generate (white, >= 128), 0 = keep."""
    picture = _read_picture(path, "mask", "L", image_shape[1:])
    return torch.from_numpy((np.asarray(picture) >= 128).astype(np.float32))[None, None]


def _edit(sampler, request: Request):
    """The `Edit` of an image-to-image or inpainting request, or None."""
    from distdiff.diffusion.edit import latent_keep_mask
    from distdiff.tasks.samplers import Edit

    if request.init_image is None:
        if request.mask is not None or request.strength is not None:
            raise SampleError("--mask and --strength edit an image: give --init-image too")
        return None
    strength = request.strength if request.strength is not None else (1.0 if request.mask else 0.6)
    if not 0.0 <= strength <= 1.0:
        raise SampleError(f"--strength must be in [0, 1], got {strength}")
    device = next(next(iter(sampler.networks.values())).parameters()).device
    image = read_init_image(request.init_image, sampler.spec.image_shape).to(device)
    init = sampler.decoder.encode(image)  # (1, c, h, w)
    keep = None
    if request.mask is not None:
        mask = read_mask(request.mask, sampler.spec.image_shape).to(device)
        keep = latent_keep_mask(mask, list(init.shape[2:]))  # (1, 1, h, w)
    return Edit(init, strength, keep)


def prepare(request: Request):
    """Everything `generate` draws with, checked: (sampler, model, settings, seeds, keyword arguments of
    `Stage2Sampler.sample`: labels or prompt tokens, guidance, edit).

    Raises:
        SampleError: naming the bad input (a missing or misshapen image or mask, a prompt or label the
            model cannot take, a sampler the export has no model for).
    """
    from distdiff.eval.checkpoint import CheckpointError, EvalCheckpoint, read_export_spec

    if request.num < 1:
        raise SampleError(f"--num must be at least 1, got {request.num}")
    try:
        spec = read_export_spec(request.checkpoint)
        model, selection = _choose(spec, request)
        checkpoint = EvalCheckpoint(request.checkpoint, samplers=selection)
    except CheckpointError as err:
        raise SampleError(str(err)) from None
    conditioning = _conditioning(spec, model, request)
    sampler = checkpoint.build_sampler(request.device)
    conditioning["edit"] = _edit(sampler, request)
    if "labels" in conditioning:
        conditioning["labels"] = conditioning["labels"].to(request.device)
    model, settings = checkpoint.selection[0]
    return sampler, model, settings, [request.seed + i for i in range(request.num)], conditioning


def generate(request: Request, progress: bool = False) -> torch.Tensor:
    """Images (num, C, H, W) in [-1, 1] for `request`; sample i uses seed `seed + i` (see `prepare`)."""
    sampler, model, settings, seeds, kwargs = prepare(request)
    return sampler.sample(model, settings, seeds, progress=progress, **kwargs)


def write_samples(images: torch.Tensor, out: str | Path, seed: int) -> list[Path]:
    """grid.png and sample-<seed>.png (actual size) in `out`; returns the paths."""
    from PIL import Image

    from distdiff.images import quantize_to_uint8, save_grid

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [save_grid(images, out / "grid.png")]
    for i, image in enumerate(quantize_to_uint8(images)):  # (C, H, W) uint8
        array = image.permute(1, 2, 0).cpu().numpy()
        path = out / f"sample-{seed + i:06d}.png"
        Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array).save(path)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    fields = {k: v for k, v in vars(args).items() if k != "out"}
    try:
        images = generate(Request(**fields), progress=True)
    except SampleError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    paths = write_samples(images, args.out, args.seed)
    print(f"{len(images)} samples written to {paths[0]} and {len(paths) - 1} single PNGs in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
