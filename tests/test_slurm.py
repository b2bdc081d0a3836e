"""Opt-in: `cluster/slurm/ray-cluster.sbatch` end to end on a one-node Slurm that the test starts.

The batch script builds a Ray cluster in the allocation and trains the stage-2 smoke config on it; a
SIGTERM to the batch shell (what Slurm sends at a job's time limit) makes it checkpoint and exit with
status 75; `scontrol requeue` runs the same job again, which resumes from that checkpoint and finishes.

Runs only with DISTDIFF_SLURM_TEST=1, as root, with Debian's Slurm and munge installed:

    apt-get install slurmctld slurmd slurm-client munge
    DISTDIFF_SLURM_TEST=1 python -m pytest tests/test_slurm.py
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from distdiff.cli import PREEMPTED_EXIT
from distdiff.testing.slurm import SlurmCluster, free_port, missing_programs
from distdiff.train.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]
STEPS = 40  # at 2 s per step (a metrics report each step) long enough for the signal to arrive mid-run

pytestmark = [
    pytest.mark.skipif(os.environ.get("DISTDIFF_SLURM_TEST") != "1", reason="opt-in: set DISTDIFF_SLURM_TEST=1"),
    pytest.mark.skipif(bool(missing_programs()), reason=f"not installed: {', '.join(missing_programs())}"),
    pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() != 0, reason="the test's Slurm daemons run as root"),
]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm")).start()
    yield cluster
    cluster.stop()


def _wait_for_step(metrics: Path, step: int, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if metrics.exists() and any(r.get("step", 0) >= step for r in read_metrics(metrics)):
            return
        time.sleep(2)
    raise TimeoutError(f"no training step {step} within {timeout:.0f} s; job output:\n{_tail(log)}")


def _tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else f"({path} does not exist)"


def test_batch_script_checkpoints_on_the_time_limit_signal_and_the_requeued_job_resumes(slurm, tmp_path):
    # The job inherits this environment (sbatch passes it on): the Python that runs the tests and its `ray`.
    env = {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "RAY_PORT": str(free_port())}
    storage = tmp_path / "storage"
    submitted = slurm.run(
        "sbatch", "--parsable", "--nodes=1", f"--output={tmp_path}/slurm-%j.out", "--open-mode=append",
        "cluster/slurm/ray-cluster.sbatch", sys.executable, "launch/train_ldm.py", "--config", "configs/ldm-smoke.yaml",
        f"output_dir={tmp_path}", f"distributed.storage_path={storage}", f"stage2.steps={STEPS}",
        "stage2.checkpoint_every=1000", "stage2.log_every=1", cwd=ROOT, env=env)
    job = submitted.stdout.strip().split(";")[0]
    log = tmp_path / f"slurm-{job}.out"
    metrics = tmp_path / "ldm-smoke" / "ldm" / "metrics.jsonl"
    _wait_for_step(metrics, 2, 400, log)

    slurm.run("scancel", "--batch", "--signal=TERM", job)
    first = slurm.wait_for_end(job, 300)
    assert first["ExitCode"] == f"{PREEMPTED_EXIT}:0", _tail(log)
    final = json.loads((storage / "ldm-smoke" / "ldm" / "final.json").read_text())
    stopped = final["steps"]
    assert final["preempted"] and 2 <= stopped < STEPS
    assert (storage / "ldm-smoke" / "ldm" / "checkpoints" / f"step-{stopped:08d}" / "COMPLETE").is_file()

    slurm.run("scontrol", "requeue", job)
    deadline = time.monotonic() + 60
    while slurm.job(job).get("Restarts") != "1" and time.monotonic() < deadline:
        time.sleep(1)
    second = slurm.wait_for_end(job, 600)
    assert (second["JobState"], second["ExitCode"]) == ("COMPLETED", "0:0"), _tail(log)
    events = read_metrics(tmp_path / "ldm-smoke" / "ldm" / "events.jsonl")
    assert [(e["event"], e["step"]) for e in events] == [("resume", stopped)]
    assert read_metrics(metrics)[-1]["step"] == STEPS
    output = log.read_text(errors="replace")
    assert "received SIGTERM: passing it to the command" in output
    assert f"command exited with status {PREEMPTED_EXIT}" in output and "command exited with status 0" in output
