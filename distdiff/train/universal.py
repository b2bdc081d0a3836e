"""Converting DeepSpeed engine checkpoints to the universal format, for elastic resume.

ZeRO stores each rank's shard of the optimizer state (and under ZeRO-3 of the weights), so a
checkpoint written by N ranks cannot be loaded by M != N ranks directly. DeepSpeed's
`ds_to_universal` rewrites it per parameter (fp32 weights, Adam moments), which any world size can
load with `"checkpoint": {"load_universal": true}`. The converted copy lives inside the engine's
folder (`engines/<name>/universal/`), next to the original that stays untouched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from distdiff.config import DistributedConfig
from distdiff.train.checkpoint import CheckpointError
from distdiff.train.deepspeed_engines import (
    CHECKPOINT_TAG,
    UNIVERSAL_DIR,
    effective_zero_stage,
    needs_universal,
    read_engine_meta,
)

UNIVERSAL_MARKER = "UNIVERSAL_COMPLETE"  # written into the checkpoint folder after every engine converted


def engine_dirs(checkpoint: Path) -> list[Path]:
    """The engine folders of a training checkpoint (`engines/<name>`)."""
    root = Path(checkpoint) / "engines"
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def universal_engines(metas: dict[str, dict], world_size: int, dist: DistributedConfig,
                      bf16: bool) -> frozenset[str]:
    """Names of the engines (given their saved `deepspeed.json`) that cannot load directly at this layout.

    Args:
        metas: engine name -> the world size / ZeRO stage / precision it was saved with.
        world_size, dist, bf16: the layout of the run about to resume (each engine's ZeRO stage is
            `effective_zero_stage` of its name).

    Raises:
        CheckpointError: for a layout change DeepSpeed cannot restore exactly.
    """
    return frozenset(name for name, meta in metas.items()
                     if needs_universal(meta, world_size, effective_zero_stage(name, dist), bf16))


def engines_needing_universal(checkpoint: Path, world_size: int, dist: DistributedConfig,
                              bf16: bool) -> frozenset[str]:
    """`universal_engines` for a local checkpoint folder."""
    metas = {d.name: read_engine_meta(d) for d in engine_dirs(checkpoint)}
    return universal_engines(metas, world_size, dist, bf16)


def convert_engine(directory: Path, timeout_s: float = 3600) -> Path:
    """Run DeepSpeed's converter on one engine folder; returns the universal folder.

    Raises:
        CheckpointError: the converter failed (its output is in the message).
    """
    source = Path(directory) / CHECKPOINT_TAG
    target_root = Path(directory) / UNIVERSAL_DIR
    shutil.rmtree(target_root, ignore_errors=True)
    command = [sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal", "--input_folder", str(source),
               "--output_folder", str(target_root / CHECKPOINT_TAG), "--num_extract_workers", "1",
               "--num_merge_workers", "1", "--inject_missing_state"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=env)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-3000:]
        raise CheckpointError(f"universal conversion of {source} failed (exit {done.returncode}):\n{tail}")
    (target_root / "latest_universal").write_text(CHECKPOINT_TAG)
    return target_root


def convert_checkpoint(checkpoint: Path) -> list[Path]:
    """Convert every sharded engine of a local checkpoint folder, then write the marker.

    Returns:
        the universal folders written.
    """
    checkpoint = Path(checkpoint)
    (checkpoint / UNIVERSAL_MARKER).unlink(missing_ok=True)
    written = []
    for directory in engine_dirs(checkpoint):
        meta = read_engine_meta(directory)
        if meta["zero_stage"] > 0 or meta["precision"] == "bf16":
            written.append(convert_engine(directory))
    (checkpoint / UNIVERSAL_MARKER).write_text("converted\n")
    return written


def has_universal(checkpoint: Path) -> bool:
    """True when `convert_checkpoint` finished on this folder."""
    return (Path(checkpoint) / UNIVERSAL_MARKER).is_file()
