"""Opening a stage-2 export folder for evaluation, with one clear message per kind of bad input.

The trainer writes `<run>/ldm/export/` holding `export.json` (the `Stage2Spec`: models, schedules,
samplers and their settings, shapes, files), the raw and EMA weights (`unet`, `unet_ema`,
`ddgan_generator`, `gan_generator_ema`, ..., each as `.safetensors` + `.json`) and, for latent space,
a copy of the VAE. An `s3://` export is first
copied into a temporary folder (only export.json and the files the evaluation needs).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import weakref
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import torch

from distdiff.data.urls import is_s3, join
from distdiff.tasks import LatentSource, ModelSpec, Stage2Sampler, Stage2Spec, select_samplers

EXPORT_FILE = "export.json"
MODEL_FAMILY = {"diffusion": "unet", "ddgan": "ddgan_generator"}  # model kind -> weights' family


class CheckpointError(ValueError):
    """The checkpoint is missing, partial, or not what the evaluation asks for."""


def _exists(url: str) -> bool:
    if is_s3(url):
        from distdiff.data import storage

        return storage.exists(url)
    return Path(url).is_file()


def _resolve_root(path: str) -> str:
    """Accept the export folder itself, or a run folder that contains `ldm/export` or `export`."""
    for sub in ("", "ldm/export", "export"):
        candidate = join(path, sub) if sub else path
        if _exists(join(candidate, EXPORT_FILE)):
            return candidate
    if not is_s3(path) and not Path(path).exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if _exists(join(path, "vae.json")) or _exists(join(path, "vae/export/vae.json")):
        raise CheckpointError(
            f"{path} holds only a VAE (a stage-1 export); evaluate the stage-2 export folder "
            f"(<run>/ldm/export, with {EXPORT_FILE}) instead")
    raise CheckpointError(
        f"no {EXPORT_FILE} in {path} (nor in {path}/ldm/export): not a distdiff stage-2 export, or the "
        "export did not finish (export.json is written after the weights)")


def _local_copy(root: str, names: list[str], local: Path | None) -> Path:
    """Local folder holding `names` of an export: the folder itself when local, else `local`.

    S3 exports are copied afresh for every evaluation (into a private temporary folder): a
    re-export under the same prefix has same-sized weights, so a size-checked cache could go stale.
    """
    if not is_s3(root):
        return Path(root)
    from distdiff.data import storage

    for name in names:
        target = local / name
        if not target.is_file():
            target.write_bytes(storage.read_bytes(join(root, name)))
    return local


def _read_spec(root: str, path: Path) -> Stage2Spec:
    """The record of the export at `root`, read from its local copy `path`."""
    where = join(root, EXPORT_FILE)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{where} is not valid JSON: {err}") from err
    try:
        return Stage2Spec.from_dict(data)
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{where}: {err}: not a distdiff stage-2 export of this version") from None


def read_export_spec(path: str) -> Stage2Spec:
    """The `Stage2Spec` of an export (folder, run folder or s3:// prefix), without touching its weights."""
    root = _resolve_root(str(path))
    if not is_s3(root):
        return _read_spec(root, Path(root) / EXPORT_FILE)
    with tempfile.TemporaryDirectory(prefix="distdiff-export-") as tmp:
        return _read_spec(root, _local_copy(root, [EXPORT_FILE], Path(tmp)) / EXPORT_FILE)


class EvalCheckpoint:
    """A validated stage-2 export and the samplers an evaluation selects from it.

    Args:
        path: export folder, run folder, or s3:// prefix of either.
        samplers: "all" or MODEL[:SAMPLER[:STEPS]] items (see `distdiff.tasks.select_samplers`).
    """

    def __init__(self, path: str, samplers: str | Sequence[str] = ("all",)):
        self.root = _resolve_root(str(path))
        self._tmp = None
        if is_s3(self.root):
            self._tmp = Path(tempfile.mkdtemp(prefix="distdiff-export-"))
            weakref.finalize(self, shutil.rmtree, self._tmp, True)  # removed with this object
        self.spec = _read_spec(self.root, _local_copy(self.root, [EXPORT_FILE], self._tmp) / EXPORT_FILE)
        try:
            self.selection = select_samplers(self.spec, samplers)
        except (KeyError, ValueError) as err:
            raise CheckpointError(f"{self.root}: {err.args[0] if err.args else err}") from None
        models = {model.name: model for model, _ in self.selection}
        self.weights = {name: self._pick_weights(model) for name, model in models.items()}
        needed = [n + ext for n in self.weights.values() for ext in (".safetensors", ".json")]
        if self.spec.space == "latent":
            needed += [f"{self.spec.vae}.safetensors", f"{self.spec.vae}.json"]
        missing = [n for n in needed if not _exists(join(self.root, n))]
        if missing:
            raise CheckpointError(f"partial checkpoint {self.root}: missing {', '.join(missing)}")
        self.local_dir = _local_copy(self.root, needed, self._tmp)

    def _pick_weights(self, model: ModelSpec) -> str:
        """The EMA weights of the model's sampling network when exported, else its raw weights."""
        for name in (f"{model.weights}_ema", model.weights):
            if name in self.spec.files:
                return name
        raise CheckpointError(f"checkpoint {self.root} lists no weights for model {model.name!r} "
                              f"(files: {', '.join(self.spec.files) or 'none'})")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.spec.image_shape)

    def _load(self, name: str, family: str, device: torch.device) -> torch.nn.Module:
        from distdiff.models import load_weights

        json_path = self.local_dir / f"{name}.json"
        try:
            found = json.loads(json_path.read_text()).get("model_config", {}).get("family")
        except (OSError, json.JSONDecodeError) as err:
            raise CheckpointError(f"cannot read {join(self.root, name + '.json')}: {err}") from err
        if found != family:
            raise CheckpointError(
                f"{join(self.root, name + '.json')} holds a {found!r} model, expected a {family!r}: "
                "a checkpoint of another model family")
        try:
            model, _ = load_weights(self.local_dir / name, map_location=device)
        except (FileNotFoundError, ValueError) as err:
            raise CheckpointError(f"cannot load {join(self.root, name)}: {err}") from err
        return model.eval().requires_grad_(False)

    def load_network(self, stem: str, family: str, device: str | torch.device = "cpu") -> torch.nn.Module:
        """Any network the export lists (e.g. a DDGAN's discriminator), frozen, in eval mode."""
        if stem not in self.spec.files:
            raise CheckpointError(f"checkpoint {self.root} holds no {stem!r} (files: {', '.join(self.spec.files)})")
        _local_copy(self.root, [f"{stem}.safetensors", f"{stem}.json"], self._tmp)
        return self._load(stem, family, torch.device(device))

    def load_vae(self, device: str | torch.device = "cpu") -> torch.nn.Module | None:
        """The export's VAE (latent space), else None."""
        return self._load(self.spec.vae, "vae", torch.device(device)) if self.spec.space == "latent" else None

    def build_sampler(self, device: str | torch.device = "cpu") -> Stage2Sampler:
        """A `Stage2Sampler` over the selected models (and the VAE in latent space).

        Args:
            device: where the networks run.
        """
        device = torch.device(device)
        networks = {name: self._load(stem, MODEL_FAMILY[self.spec.model(name).kind], device)
                    for name, stem in self.weights.items()}
        spec = replace(self.spec, models=tuple(m for m in self.spec.models if m.name in networks))
        return Stage2Sampler(spec, LatentSource(self.load_vae(device)), networks)
