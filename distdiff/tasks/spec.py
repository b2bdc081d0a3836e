"""What stage 2 trained, as one typed record: written once into `export.json`, read by every loader.

A `Stage2Spec` holds the diffusion space and shapes, the classes and guidance, and one `ModelSpec`
per trained model (its name, kind, schedule, latent size and default samplers with their
settings). The trainer builds it from the run config; the evaluator, the sample grids and any tool
that opens an export read it back, so a setting such as DDIM's eta cannot be lost on the way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from distdiff.diffusion import ScheduleSpec

SPEC_FORMAT = "distdiff-stage2"
SPEC_VERSION = 2
MODEL_KINDS = ("diffusion", "ddgan")


def _reject_unknown(data: dict, allowed: set[str], what: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(unknown)} in {what}")


@dataclass(frozen=True)
class SamplerSpec:
    """A sampler and its settings.

    Args:
        name: a key of `distdiff.tasks.samplers.SAMPLERS` ("ddpm", "ddim", "ddgan").
        steps: DDIM's number of steps (None for the others: they take every step of the schedule).
        eta: DDIM's noise level (0: deterministic; 1: DDPM's posterior variance on the DDIM grid).
    """

    name: str
    steps: int | None = None
    eta: float = 0.0

    def to_dict(self) -> dict:
        out: dict = {"name": self.name}
        if self.steps is not None:
            out["steps"] = self.steps
        if self.name == "ddim":
            out["eta"] = self.eta
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "SamplerSpec":
        _reject_unknown(data, {"name", "steps", "eta"}, f"sampler {data!r}")
        return cls(str(data["name"]), data.get("steps"), float(data.get("eta", 0.0)))


@dataclass(frozen=True)
class ModelSpec:
    """One trained stage-2 model.

    Args:
        name: "ldm", "ddgan", "gan" (what reports, keys and selections call it).
        kind: "diffusion" (an epsilon U-Net) or "ddgan" (a generator over T denoising steps).
        weights: export stem of the network that samples (EMA weights: `<weights>_ema` when present).
        schedule: the schedule it was trained on.
        samplers: its default samplers, in report order.
        nz: latent size of a DDGAN generator.
        parameters: parameter count of the sampling network.
    """

    name: str
    kind: str
    weights: str
    schedule: ScheduleSpec
    samplers: tuple[SamplerSpec, ...] = ()
    nz: int | None = None
    parameters: int | None = None

    def __post_init__(self):
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"model {self.name!r}: unknown kind {self.kind!r}; valid: {', '.join(MODEL_KINDS)}")
        if self.kind == "ddgan" and not self.nz:
            raise ValueError(f"model {self.name!r}: a DDGAN generator needs nz")

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "weights": self.weights,
                "schedule": self.schedule.to_dict(), "samplers": [s.to_dict() for s in self.samplers],
                "nz": self.nz, "parameters": self.parameters}

    @classmethod
    def from_dict(cls, data: dict) -> "ModelSpec":
        _reject_unknown(data, {"name", "kind", "weights", "schedule", "samplers", "nz", "parameters"},
                        f"model {data.get('name')!r}")
        return cls(data["name"], data["kind"], data["weights"], ScheduleSpec.from_dict(data["schedule"]),
                   tuple(SamplerSpec.from_dict(s) for s in data.get("samplers", [])), data.get("nz"),
                   data.get("parameters"))


@dataclass(frozen=True)
class Stage2Spec:
    """Everything a loader needs to sample a stage-2 export.

    Args:
        space: "latent" (decoded by the VAE stored beside the weights) or "pixel".
        image_shape: (C, H, W) of the images.
        latent_shape: (c, h, w) of the diffusion space (the image shape in pixel space).
        models: the trained models, in report order.
        num_classes: classes of a class-conditional U-Net (None: unconditional).
        guidance_scale: classifier-free guidance scale used when sampling it.
        text: the caption record of a text-conditioned U-Net (`distdiff.text.caption_record`: its
            tokenizer's vocabulary and length, one prompt per class), else None.
        vae: export stem of the VAE (latent space), else None.
        files: the weight stems the export holds.
    """

    space: str
    image_shape: tuple[int, int, int]
    latent_shape: tuple[int, int, int]
    models: tuple[ModelSpec, ...]
    num_classes: int | None = None
    guidance_scale: float = 1.0
    vae: str | None = None
    files: tuple[str, ...] = field(default=())
    text: dict | None = None

    def __post_init__(self):
        if self.space not in ("latent", "pixel"):
            raise ValueError(f"space must be 'latent' or 'pixel', got {self.space!r}")
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"model names repeat: {names}")

    @property
    def model_names(self) -> list[str]:
        return [m.name for m in self.models]

    def model(self, name: str) -> ModelSpec:
        """The model called `name`; the error lists what the export holds."""
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(f"no model {name!r} in this export (models: {', '.join(self.model_names) or 'none'})")

    def to_dict(self) -> dict:
        return {"format": SPEC_FORMAT, "version": SPEC_VERSION, "space": self.space,
                "image_shape": list(self.image_shape), "latent_shape": list(self.latent_shape),
                "num_classes": self.num_classes, "guidance_scale": self.guidance_scale, "vae": self.vae,
                "models": [m.to_dict() for m in self.models], "files": list(self.files),
                **({"text": self.text} if self.text is not None else {})}

    @classmethod
    def from_dict(cls, data: dict) -> "Stage2Spec":
        """Parse `to_dict`'s output; raises ValueError naming what is missing or unknown."""
        if data.get("format") != SPEC_FORMAT:
            raise ValueError(f"not a {SPEC_FORMAT} record (format {data.get('format')!r})")
        if data.get("version", 0) > SPEC_VERSION:
            raise ValueError(f"{SPEC_FORMAT} version {data['version']} is newer than {SPEC_VERSION}")
        missing = [k for k in ("space", "image_shape", "latent_shape", "models") if k not in data]
        if missing:
            raise ValueError(f"{SPEC_FORMAT} record lacks {', '.join(missing)}")
        _reject_unknown(data, {"format", "version", "space", "image_shape", "latent_shape", "num_classes",
                               "guidance_scale", "vae", "models", "files", "text"}, SPEC_FORMAT)
        return cls(data["space"], tuple(data["image_shape"]), tuple(data["latent_shape"]),
                   tuple(ModelSpec.from_dict(m) for m in data["models"]), data.get("num_classes"),
                   float(data.get("guidance_scale", 1.0)), data.get("vae"), tuple(data.get("files", ())),
                   data.get("text"))

    def write(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))
