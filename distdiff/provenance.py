"""Where, when and with what code a measured run happened: the record that makes its figures checkable.

Two runs of one seeded config can score differently when the code or the host changed between them;
without this record there is no telling which. It describes the machine that ran the command (the
driver): on a cluster the workers may differ, and their own logs say so.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def utc_now() -> str:
    """The current time in UTC, to the second, ISO 8601 (`2026-12-03T15:33:24Z`)."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def cpu_model() -> str:
    """The CPU's model name as the kernel reports it (Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def code_version() -> dict:
    """The checkout's commit and whether tracked files differ from it; None for both outside a git checkout
    (an installed wheel)."""
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "modified": None}
    return {"commit": commit, "modified": bool(_git("status", "--porcelain", "--untracked-files=no"))}


def host() -> dict:
    """The machine: CPU model and cores, GPU if any, and what changes the arithmetic: the vector
    instructions torch's CPU kernels dispatch to (AVX2, AVX512, ...) and the library versions."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu_model(), "cpu_count": os.cpu_count(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "gpu": gpu, "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "platform": platform.platform()}


def provenance(command: list[str], started_utc: str) -> dict:
    """The record of one finished run: its command line, start and end (UTC), host and code."""
    return {"command": command, "started_utc": started_utc, "finished_utc": utc_now(), "host": host(),
            "code": code_version()}


def describe(record: dict) -> str:
    """One sentence for a report: when (this invocation; a resumed run started earlier), on what, with
    which code."""
    h, code = record["host"], record["code"]
    device = h["gpu"] or f"{h['cpu']} ({h['cpu_count']} cores, {h['cpu_capability']} kernels)"
    if code["commit"] is None:
        version = "code outside a git checkout"
    else:
        version = f"commit {code['commit'][:10]}" + (" with local changes" if code["modified"] else "")
    return (f"This invocation ran from {record['started_utc']} to {record['finished_utc']} on {device}, "
            f"torch {h['torch']}, {version}: `{' '.join(record['command'])}`.")
