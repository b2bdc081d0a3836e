"""Opening a stage-2 export folder for evaluation, with one clear message per kind of bad input.

The trainer writes `<run>/ldm/export/` holding `export.json` (models present, schedules, shapes),
the raw and EMA weights (`unet`, `unet_ema`, `ddgan_generator`, `ddgan_generator_ema`, each as
`.safetensors` + `.json`) and, for latent space, a copy of the VAE. An `s3://` export is first
copied into a temporary folder (only export.json and the files the evaluation needs).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import weakref
from pathlib import Path

import torch

EXPORT_FILE = "export.json"
# Which saved weights serve each evaluated model, best first: EMA weights are what one samples from.
MODEL_WEIGHTS = {"ldm": ("unet_ema", "unet"), "ddgan": ("ddgan_generator_ema", "ddgan_generator")}
MODEL_FAMILY = {"ldm": "unet", "ddgan": "ddgan_generator"}
REQUIRED_KEYS = ("models", "space", "image_shape", "latent_shape")


class CheckpointError(ValueError):
    """The checkpoint is missing, partial, or not what the evaluation asks for."""


def _is_s3(path: str) -> bool:
    return str(path).startswith("s3://")


def _join(root: str, name: str) -> str:
    return root.rstrip("/") + "/" + name if _is_s3(root) else str(Path(root) / name)


def _exists(url: str) -> bool:
    if _is_s3(url):
        from distdiff.data import storage

        return storage.exists(url)
    return Path(url).is_file()


def _resolve_root(path: str) -> str:
    """Accept the export folder itself, or a run folder that contains `ldm/export` or `export`."""
    for sub in ("", "ldm/export", "export"):
        candidate = _join(path, sub) if sub else path
        if _exists(_join(candidate, EXPORT_FILE)):
            return candidate
    if not _is_s3(path) and not Path(path).exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if _exists(_join(path, "vae.json")) or _exists(_join(path, "vae/export/vae.json")):
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
    if not _is_s3(root):
        return Path(root)
    from distdiff.data import storage

    for name in names:
        target = local / name
        if not target.is_file():
            target.write_bytes(storage.read_bytes(_join(root, name)))
    return local


class EvalCheckpoint:
    """A validated stage-2 export.

    Args:
        path: export folder, run folder, or s3:// prefix of either.
        models: which models the evaluation needs ("ldm", "ddgan").
    """

    def __init__(self, path: str, models: list[str]):
        unknown = sorted(set(models) - set(MODEL_WEIGHTS))
        if unknown:
            raise CheckpointError(f"unknown model(s) {unknown}; valid: {sorted(MODEL_WEIGHTS)}")
        self.root = _resolve_root(str(path))
        self._tmp = None
        if _is_s3(self.root):
            self._tmp = Path(tempfile.mkdtemp(prefix="distdiff-export-"))
            weakref.finalize(self, shutil.rmtree, self._tmp, True)  # removed with this object
        meta_dir = _local_copy(self.root, [EXPORT_FILE], self._tmp)
        self.meta = self._read_meta(meta_dir / EXPORT_FILE)
        self.weights = {kind: self._pick_weights(kind) for kind in models}
        needed = [n + ext for n in self.weights.values() for ext in (".safetensors", ".json")]
        if self.meta["space"] == "latent":
            needed += ["vae.safetensors", "vae.json"]
        missing = [n for n in needed if not _exists(_join(self.root, n))]
        if missing:
            raise CheckpointError(f"partial checkpoint {self.root}: missing {', '.join(missing)}")
        self.local_dir = _local_copy(self.root, needed, self._tmp)

    def _read_meta(self, path: Path) -> dict:
        where = _join(self.root, EXPORT_FILE)
        try:
            meta = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise CheckpointError(f"{where} is not valid JSON: {err}") from err
        missing = [k for k in REQUIRED_KEYS if k not in meta]
        if missing:
            raise CheckpointError(f"{where} lacks {', '.join(missing)}: not a distdiff stage-2 export")
        if meta["space"] not in ("latent", "pixel"):
            raise CheckpointError(f"{where}: space must be 'latent' or 'pixel', got {meta['space']!r}")
        return meta

    def _pick_weights(self, kind: str) -> str:
        present = self.meta.get("models") or []
        for name in MODEL_WEIGHTS[kind]:
            if name in present:
                return name
        raise CheckpointError(
            f"checkpoint {self.root} has no {kind.upper()} model (models present: {', '.join(present) or 'none'}); "
            f"choose --model among what it holds")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.meta["image_shape"])

    def _load(self, name: str, family: str, device: torch.device) -> torch.nn.Module:
        from distdiff.models import load_weights

        json_path = self.local_dir / f"{name}.json"
        try:
            found = json.loads(json_path.read_text()).get("model_config", {}).get("family")
        except (OSError, json.JSONDecodeError) as err:
            raise CheckpointError(f"cannot read {_join(self.root, name + '.json')}: {err}") from err
        if found != family:
            raise CheckpointError(
                f"{_join(self.root, name + '.json')} holds a {found!r} model, expected a {family!r}: "
                "a checkpoint of another model family")
        try:
            model, _ = load_weights(self.local_dir / name, map_location=device)
        except (FileNotFoundError, ValueError) as err:
            raise CheckpointError(f"cannot load {_join(self.root, name)}: {err}") from err
        return model.eval().requires_grad_(False)

    def build_sampler(self, device: str | torch.device = "cpu"):
        """A `LatentSampler` over the requested models (and the VAE in latent space).

        Args:
            device: where the networks run.

        Returns:
            distdiff.tasks.LatentSampler.
        """
        from distdiff.diffusion import ddgan_schedule, ddpm_schedule
        from distdiff.tasks import LatentSampler, LatentSource

        device = torch.device(device)
        vae = self._load("vae", "vae", device) if self.meta["space"] == "latent" else None
        unet = self._load(self.weights["ldm"], "unet", device) if "ldm" in self.weights else None
        gen = self._load(self.weights["ddgan"], "ddgan_generator", device) if "ddgan" in self.weights else None
        ldm_cfg, gan_cfg = self.meta.get("ldm") or {}, self.meta.get("ddgan") or {}
        if unet is not None and not ldm_cfg:
            raise CheckpointError(f"{_join(self.root, EXPORT_FILE)} has a U-Net but no 'ldm' schedule entry")
        if gen is not None and not gan_cfg:
            raise CheckpointError(f"{_join(self.root, EXPORT_FILE)} has a DDGAN generator but no 'ddgan' entry")
        return LatentSampler(
            LatentSource(vae), self.meta["latent_shape"],
            unet=unet,
            ldm_schedule=ddpm_schedule(ldm_cfg["num_steps"], ldm_cfg["beta_start"], ldm_cfg["beta_end"],
                                       kind=ldm_cfg.get("kind", "linear")) if unet is not None else None,
            generator=gen,
            ddgan_schedule=ddgan_schedule(gan_cfg["num_steps"], gan_cfg["beta_min"], gan_cfg["beta_max"])
            if gen is not None else None,
            nz=int(gan_cfg.get("nz", 100)),
            num_classes=self.meta.get("num_classes"),
            guidance_scale=float(self.meta.get("guidance_scale", 1.0)),
        )
