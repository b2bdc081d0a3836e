"""Metrics sinks: a JSON-lines file and TensorBoard event files, written by rank 0."""

from __future__ import annotations

import json
import time
from pathlib import Path


class MetricsLogger:
    """Appends one JSON object per logged step to `metrics.jsonl`, and mirrors scalars to TensorBoard."""

    def __init__(self, directory: str | Path, tensorboard: bool = True):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / "metrics.jsonl"
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.directory / "tensorboard"))
            except ImportError:  # tensorboard is optional for the library; the jsonl is always written
                self.writer = None

    def log(self, step: int, metrics: dict) -> None:
        """Record the metrics of `step`."""
        record = {"step": step, "time": round(time.time(), 3), **metrics}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_metrics(path: str | Path) -> list[dict]:
    """All records of a metrics.jsonl file."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
