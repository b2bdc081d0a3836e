"""Training checkpoints: engine states, EMA weights, data position, RNG states and counters.

A checkpoint is a folder; it counts only once its `COMPLETE` marker exists, which the context
writes last (after every rank has written its part), so a crash mid-write never leaves a folder
that looks loadable. Each rank also lists the size and SHA-256 of every file it wrote
(`manifest/rank-XXXXX.json`), so that a resume can tell a whole checkpoint from one damaged later
(a truncated upload, a disk error) and fall back to the next older one. Weights are safetensors,
everything else plain JSON or tensors loaded with `weights_only=True`.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Optional

import torch
from safetensors.torch import load_file, save_file

if TYPE_CHECKING:
    from distdiff.train.engines import EngineSet

COMPLETE_MARKER = "COMPLETE"
MANIFEST_DIR = "manifest"
STEP_DIR = re.compile(r"^step-(\d{8})$")


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, partial or corrupt; the message names the folder and file."""


@dataclass
class TrainState:
    """Counters restored from a checkpoint."""

    step: int = 0
    samples_seen: int = 0
    data_states: list = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    rng_restored: bool = True  # False: this rank had no saved streams (the run grew); seed them afresh


def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


def is_complete(directory: Path) -> bool:
    """True when the folder carries the completion marker."""
    return (directory / COMPLETE_MARKER).is_file()


def list_complete(root: Path) -> list[Path]:
    """Complete checkpoint folders under `root`, oldest step first."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := STEP_DIR.match(p.name)) and is_complete(p)]
    return [p for _, p in sorted(found)]


def prune(root: Path, keep: int) -> None:
    """Delete all but the newest `keep` complete checkpoints, and stale partial folders."""
    complete = list_complete(root)
    for old in complete[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".partial-*"):
        shutil.rmtree(stale, ignore_errors=True)


def rng_state(generator: torch.Generator) -> dict:
    """The global and training-generator RNG states of this rank."""
    state = {"torch": torch.get_rng_state(), "generator": generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng(state: dict, generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["generator"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def write_checkpoint(directory: Path, engines: EngineSet, emas: dict, state: TrainState, generator, rank: int,
                     config_yaml: str | None = None) -> None:
    """Write this rank's part of a checkpoint into `directory` (engines save collectively)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, engine in engines.items():
        engine.save(directory / "engines" / name)
    (directory / "rng").mkdir(exist_ok=True)
    torch.save(rng_state(generator), directory / "rng" / f"rank-{rank:05d}.pt")
    if rank == 0:
        _write_rank0_part(directory, emas, state, config_yaml)
    write_manifest(directory, rank)


def _write_rank0_part(directory: Path, emas: dict, state: TrainState, config_yaml: str | None) -> None:
    """The EMA weights, counters and config, which only rank 0 writes."""
    (directory / "ema").mkdir(exist_ok=True)
    for name, ema in emas.items():
        save_file(ema.state_dict(), str(directory / "ema" / f"{name}.safetensors"))
    meta = {
        "step": state.step,
        "samples_seen": state.samples_seen,
        "data_states": state.data_states,
        "metrics": state.metrics,
        "ema_updates": {name: ema.num_updates for name, ema in emas.items()},
    }
    (directory / "state.json").write_text(json.dumps(meta, indent=1))
    if config_yaml is not None:
        (directory / "config.yaml").write_text(config_yaml)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(directory: Path, rank: int) -> None:
    """List the size and SHA-256 of every file this rank wrote into `directory` (call it last).

    On Ray each rank's staging folder holds only its own files, so the manifests of all ranks
    together cover the checkpoint once the files are gathered in storage.
    """
    files = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        relative = path.relative_to(directory)
        if relative.parts[0] != MANIFEST_DIR:
            files[relative.as_posix()] = [path.stat().st_size, _sha256(path)]
    (directory / MANIFEST_DIR).mkdir(exist_ok=True)
    lines = [f"{json.dumps(name)}: {json.dumps(entry)}" for name, entry in files.items()]  # one file a line
    (directory / MANIFEST_DIR / f"rank-{rank:05d}.json").write_text("{\n" + ",\n".join(lines) + "\n}\n")


def find_damage(manifests: Iterable[tuple[str, str]], size_of: Callable[[str], Optional[int]],
                digest_of: Optional[Callable[[str], str]] = None) -> Optional[str]:
    """The first file that differs from what its rank wrote, described; None when all match.

    Args:
        manifests: (name, JSON text) of each manifest file.
        size_of: a file's size by its path relative to the checkpoint (None: missing).
        digest_of: its SHA-256; None checks sizes only (what a storage listing can tell).
    """
    for manifest, text in manifests:
        try:
            listed = json.loads(text)
        except ValueError as err:
            return f"{MANIFEST_DIR}/{manifest} is unreadable ({err})"
        for relative, (size, digest) in listed.items():
            actual = size_of(relative)
            if actual is None:
                return f"{relative} is missing"
            if actual != size:
                return f"{relative} has {actual} bytes where {size} were written"
            if digest_of is not None and digest_of(relative) != digest:
                return f"{relative} differs from the file that was written (SHA-256)"
    return None


def local_damage(directory: Path) -> Optional[str]:
    """`find_damage` for a local checkpoint folder, sizes and hashes. A checkpoint written before
    manifests existed has none, and passes."""
    manifests = [(p.name, p.read_text()) for p in sorted((directory / MANIFEST_DIR).glob("rank-*.json"))]

    def size_of(relative: str) -> Optional[int]:
        path = directory / relative
        return path.stat().st_size if path.is_file() else None

    return find_damage(manifests, size_of, lambda relative: _sha256(directory / relative))


def newest_intact(names_newest_first: Iterable[str], damage_of: Callable[[str], Optional[str]], where: str,
                  warn: Callable[[str], None]) -> Optional[str]:
    """The first complete checkpoint without damage, warning about each damaged one passed over.

    Raises:
        CheckpointError: every complete checkpoint is damaged (resuming from none of them, or
            starting over, would silently lose the run).
    """
    damaged = []
    for name in names_newest_first:
        problem = damage_of(name)
        if problem is None:
            if damaged:
                warn(f"resuming from the older checkpoint {where}/{name} instead")
            return name
        warn(f"checkpoint {where}/{name} is damaged: {problem}; passing over it")
        damaged.append(f"{name} ({problem})")
    if damaged:
        raise CheckpointError(f"no loadable checkpoint in {where}: every complete one is damaged: "
                              f"{'; '.join(damaged)}. Move the damaged folders away to start the stage over")
    return None


def _require(path: Path, checkpoint: Path) -> Path:
    if not path.exists():
        raise CheckpointError(f"checkpoint {checkpoint} is incomplete: {path.relative_to(checkpoint)} is missing")
    return path


def read_checkpoint(directory: Path, engines: EngineSet, emas: dict, generator, rank: int) -> TrainState:
    """Restore engines, EMAs and RNG from `directory`; returns the counters.

    Raises:
        CheckpointError: missing marker, missing file, or unreadable content (naming which).
    """
    if not is_complete(directory):
        raise CheckpointError(f"checkpoint {directory} has no {COMPLETE_MARKER} marker: it is partial")
    try:
        meta = json.loads(_require(directory / "state.json", directory).read_text())
        for name, engine in engines.items():
            engine.load(_require(directory / "engines" / name, directory))
        for name, ema in emas.items():
            weights = load_file(str(_require(directory / "ema" / f"{name}.safetensors", directory)))
            ema.load_state_dict(weights, meta["ema_updates"][name])
        own = directory / "rng" / f"rank-{rank:05d}.pt"
        rng_restored = own.exists()
        # After the run grew, a new rank has no streams of its own; never copy another rank's (two
        # ranks would draw identical noise): the caller seeds fresh ones.
        if rng_restored:
            restore_rng(torch.load(own, weights_only=True), generator)
        else:
            _require(directory / "rng" / "rank-00000.pt", directory)  # rank 0's file proves the folder whole
    except CheckpointError:
        raise
    except Exception as err:  # corrupt safetensors, truncated JSON, wrong shapes...
        raise CheckpointError(f"checkpoint {directory} is corrupt: {type(err).__name__}: {err}") from err
    return TrainState(meta["step"], meta["samples_seen"], meta["data_states"], meta.get("metrics", {}),
                      rng_restored=rng_restored)


def seed_fresh_streams(generator: torch.Generator, seed: int, rank: int, step: int) -> None:
    """Seed this process's torch streams and `generator` from (seed, rank, step) alone.

    For a rank that a resumed run added: its noise is new, reproducible, and different from every other
    rank's, whatever the world size was before.
    """
    digest = hashlib.sha256(f"distdiff-streams/{seed}/{rank}/{step}".encode()).digest()
    torch.manual_seed(int.from_bytes(digest[:8], "little") >> 1)
    generator.manual_seed(int.from_bytes(digest[8:16], "little") >> 1)
