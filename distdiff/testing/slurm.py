"""A throwaway one-node Slurm cluster for the opt-in end-to-end test of `cluster/slurm/ray-cluster.sbatch`.

Needs Debian's `slurmctld`, `slurmd`, `slurm-client` and `munge` packages (run as root, as in a
container): `apt-get install slurmctld slurmd slurm-client munge`. Everything else lives in one folder
of the caller's choosing: its own munge key and socket, `slurm.conf`, state, spool and logs, and free
ports for both daemons, so no system configuration is read or changed. Clients find the cluster
through `SLURM_CONF` (see `env()`).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "sinfo")  # daemons and clients


def missing_programs() -> list[str]:
    """The Slurm and munge programs not on PATH (or in /usr/sbin)."""
    return [name for name in PROGRAMS if not (shutil.which(name) or Path("/usr/sbin", name).is_file())]


def _program(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SlurmCluster:
    """munged + slurmctld + slurmd for this machine as one node of partition "debug".

    Args:
        root: an empty folder (created) for the key, config, state and logs.
        cpus: the node's CPUs as Slurm (and so Ray) counts them; default: this machine's, at least 4 (a
            2-worker smoke run also needs a CPU for Ray Train's controller). Slurm takes the configured
            count on trust (`SlurmdParameters=config_overrides`).
    """

    def __init__(self, root: Path, cpus: int | None = None):
        self.root = Path(root)
        self.cpus = cpus or max(4, os.cpu_count() or 1)
        self.node = socket.gethostname().split(".")[0]
        self.conf = self.root / "slurm.conf"
        self.munge_socket = self.root / "munge.sock"

    def env(self) -> dict[str, str]:
        """What a client (sbatch, scontrol) needs to reach this cluster."""
        return {"SLURM_CONF": str(self.conf)}

    def _write_config(self) -> None:
        for sub in ("state", "spool", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        key = self.root / "munge.key"
        key.write_bytes(os.urandom(128))
        key.chmod(0o600)
        # proctrack/linuxproc and task/none: no cgroups needed; no accounting daemon; jobs stay listed
        # for an hour after they end (MinJobAge) so that their exit codes can be read and requeued.
        self.conf.write_text("\n".join([
            "ClusterName=distdiff-test",
            f"SlurmctldHost={self.node}(127.0.0.1)",
            f"SlurmctldPort={free_port()}", f"SlurmdPort={free_port()}",
            "SlurmUser=root", "SlurmdUser=root",
            "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={self.munge_socket}",
            f"StateSaveLocation={self.root / 'state'}", f"SlurmdSpoolDir={self.root / 'spool'}",
            f"SlurmctldPidFile={self.root / 'slurmctld.pid'}", f"SlurmdPidFile={self.root / 'slurmd.pid'}",
            f"SlurmctldLogFile={self.root / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={self.root / 'log' / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "MpiDefault=none",
            "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
            "SelectType=select/linear", "SchedulerType=sched/builtin", "ReturnToService=2",
            "JobRequeue=1", "MinJobAge=3600", "SlurmdParameters=config_overrides",
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} State=UNKNOWN",
            "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP", ""]))

    def start(self, timeout: float = 60) -> "SlurmCluster":
        """Start the three daemons and wait until the node is idle."""
        self._write_config()
        subprocess.run([_program("munged"), "--force", f"--key-file={self.root / 'munge.key'}",
                        f"--socket={self.munge_socket}", f"--pid-file={self.root / 'munged.pid'}",
                        f"--log-file={self.root / 'log' / 'munged.log'}", f"--seed-file={self.root / 'munge.seed'}"],
                       check=True, timeout=30)
        for daemon in ("slurmctld", "slurmd"):
            subprocess.run([_program(daemon), "-f", str(self.conf)], check=True, timeout=30,
                           env={**os.environ, **self.env()})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.run("sinfo", "-h", "-o", "%t", check=False).stdout.strip()
            if state == "idle":
                return self
            time.sleep(1)
        raise RuntimeError(f"the Slurm node did not become idle within {timeout:.0f} s (sinfo: {state!r}); "
                           f"logs in {self.root / 'log'}")

    def run(self, *command: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        """A Slurm client command against this cluster."""
        return subprocess.run([_program(command[0]), *command[1:]], capture_output=True, text=True, timeout=60,
                              check=check, env={**os.environ, **self.env(), **kwargs.pop("env", {})}, **kwargs)

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job` as a dict (JobState, ExitCode, Restarts, ...)."""
        text = self.run("scontrol", "show", "job", "-o", job_id).stdout
        return dict(field.split("=", 1) for field in text.split() if "=" in field)

    def wait_for_end(self, job_id: str, timeout: float) -> dict[str, str]:
        """The job's record once it has ended (any state but PENDING, RUNNING, REQUEUED...)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            record = self.job(job_id)
            if record.get("JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"):
                return record
            time.sleep(2)
        raise TimeoutError(f"Slurm job {job_id} still {self.job(job_id).get('JobState')} after {timeout:.0f} s")

    def stop(self) -> None:
        """Stop slurmctld and slurmd, then munged."""
        self.run("scontrol", "shutdown", check=False)
        pid_file = self.root / "munged.pid"
        if pid_file.is_file():
            subprocess.run(["kill", pid_file.read_text().strip()], check=False)
