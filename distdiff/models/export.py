"""Weight export: ``<stem>.safetensors`` (the state dict) next to ``<stem>.json`` (model_config + metadata)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from distdiff.models.registry import model_from_config

FORMAT_NAME = "distdiff-weights"
FORMAT_VERSION = 1
_SUFFIXES = (".safetensors", ".json")


def weight_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """The (tensor file, JSON file) pair for ``path``, given with or without either extension."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in _SUFFIXES else path
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def _atomic_write(target: Path, write) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``target``, then rename it over ``target``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_weights(model: nn.Module, path: str | os.PathLike, metadata: dict[str, Any] | None = None) -> Path:
    """Save ``model``'s state dict and its ``model_config`` (plus plain ``metadata``).

    Both files are written atomically (temporary file, then ``os.replace``); the tensors first, so
    a JSON file never points at tensors older than itself.

    Args:
        model: a model with a ``model_config`` attribute (every distdiff model has one).
        path: destination, with or without ``.safetensors``/``.json``.
        metadata: extra JSON-serialisable data (e.g. step, EMA decay, dataset).

    Returns:
        Path of the ``.safetensors`` file.
    """
    config = getattr(model, "model_config", None)
    if config is None:
        raise ValueError(f"cannot save {type(model).__name__} to {path}: it has no model_config attribute")
    tensor_path, json_path = weight_paths(path)
    tensor_path.parent.mkdir(parents=True, exist_ok=True)
    document = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "model_config": config, "metadata": metadata or {}}
    try:
        text = json.dumps(document, indent=2, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ValueError(f"metadata for {json_path} is not plain JSON data: {err}") from err
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in model.state_dict().items()}

    def write_json(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    _atomic_write(tensor_path, lambda tmp: save_file(tensors, tmp, metadata={"format": FORMAT_NAME}))
    _atomic_write(json_path, write_json)
    return tensor_path


def _read_document(json_path: Path) -> dict[str, Any]:
    if not json_path.is_file():
        raise FileNotFoundError(f"model config file not found: {json_path}")
    try:
        document = json.loads(json_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"corrupt model config file {json_path}: {err}") from err
    if not isinstance(document, dict) or document.get("format") != FORMAT_NAME or "model_config" not in document:
        raise ValueError(f"{json_path} is not a {FORMAT_NAME} file (missing 'format' or 'model_config')")
    if document.get("version", 0) > FORMAT_VERSION:
        raise ValueError(f"{json_path} has format version {document['version']}, newer than {FORMAT_VERSION}")
    return document


def load_weights(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model saved by :func:`save_weights` and load its tensors (strictly).

    Args:
        path: the saved path, with or without ``.safetensors``/``.json``.
        map_location: device for the tensors and the returned model.

    Returns:
        (model in eval mode, metadata dict).

    Raises:
        FileNotFoundError: either file is missing (named in the message).
        ValueError: a file is corrupt, or the tensors do not match the config.
    """
    tensor_path, json_path = weight_paths(path)
    document = _read_document(json_path)
    if not tensor_path.is_file():
        raise FileNotFoundError(f"weights file not found: {tensor_path}")
    try:
        state = load_file(str(tensor_path), device=str(torch.device(map_location)))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"corrupt weights file {tensor_path}: {err}") from err
    try:
        model = model_from_config(document["model_config"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"invalid model_config in {json_path}: {err}") from err
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"weights in {tensor_path} do not match the model in {json_path}: {err}") from err
    return model.to(map_location).eval(), document.get("metadata", {})
