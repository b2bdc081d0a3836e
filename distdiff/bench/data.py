"""Data-plane benchmark: streaming throughput from S3 versus local disk, and versus a training step.

One run writes the same shards twice (local folder and a SeaweedFS bucket, byte-identical, checked
by the dataset hash), encodes latent shards from them, then times full streams from each place.
Rounds alternate local and S3 so that load from other processes on the machine hits both alike;
the median of the rounds is reported.
"""

from __future__ import annotations

import os
import resource
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from distdiff.data.formats import embedded_mnist
from distdiff.data.latents import PoolEncoder, encode_latent_shards
from distdiff.data.manifest import read_manifest
from distdiff.testing.environ import environment
from distdiff.testing.seaweed import SeaweedServer
from distdiff.data.source import build_stream
from distdiff.data.writer import write_image_shards
from distdiff.tasks import VAEEncoder


@dataclass
class BenchSettings:
    """What to measure and how long."""

    batch_size: int = 64
    num_workers: int = 2
    shard_size: int = 500
    image_epochs: int = 2
    latent_epochs: int = 10
    rounds: int = 5
    vae_weights: str | None = None  # encode latents with this VAE instead of the pooling stand-in
    workdir: str | None = None


def _cpu_seconds(pid: int | None = None) -> float:
    """CPU time of this process and its reaped children (loader workers), or of another process."""
    if pid is not None:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def stream_rate(source: str, settings: BenchSettings, epochs: int) -> tuple[float, int]:
    """Samples per second of one rank reading `epochs` epochs (clock starts at the first batch).

    Returns:
        (samples/s, samples timed).
    """
    stream = build_stream(source, settings.batch_size, 0, 1, seed=0, num_workers=settings.num_workers,
                          epochs=epochs)
    it = iter(stream)
    next(it)  # loader start-up (process fork, first shard) is a one-off cost, not throughput
    start, samples = time.perf_counter(), 0
    for batch in it:
        samples += len(batch["label"])
    return samples / (time.perf_counter() - start), samples


def compare_rates(local: str, remote: str, settings: BenchSettings, epochs: int, server_pid: int | None = None
                  ) -> dict:
    """Samples/s from local disk and from S3 in alternating rounds, and the S3/local ratio.

    On a shared machine the rate drifts with other load, so each round pairs a local and an S3
    run back to back and the ratio reported is the median of the per-round ratios. CPU time per
    1,000 samples (reader process + loader workers, and the S3 server, which here shares the same
    cores) is reported as a load-independent view of the cost.
    """
    rates, ratios = {"local": [], "s3": []}, []
    cpu = {"local_reader": 0.0, "s3_reader": 0.0, "s3_server": 0.0}
    samples = {"local": 0, "s3": 0}
    for round_index in range(settings.rounds):
        order = [("local", local), ("s3", remote)] if round_index % 2 == 0 else [("s3", remote), ("local", local)]
        for name, source in order:
            reader, server = _cpu_seconds(), _cpu_seconds(server_pid) if server_pid else 0.0
            rate, count = stream_rate(source, settings, epochs)
            rates[name].append(rate)
            samples[name] += count
            cpu[f"{name}_reader"] += _cpu_seconds() - reader
            if name == "s3" and server_pid:
                cpu["s3_server"] += _cpu_seconds(server_pid) - server
        ratios.append(rates["s3"][-1] / rates["local"][-1])
    per_1000 = {key: 1000 * value / samples[key.split("_")[0]] for key, value in cpu.items()}
    return {"local_samples_per_s": statistics.median(rates["local"]),
            "s3_samples_per_s": statistics.median(rates["s3"]), "s3_over_local": statistics.median(ratios),
            "round_ratios": ratios, "rounds": rates, "cpu_seconds_per_1000_samples": per_1000}


def step_rate(step: Callable[[dict], None], batch: dict, warmup: int = 2, steps: int = 3) -> float:
    """Samples per second that a training step consumes, timed on one batch."""
    for _ in range(warmup):
        step(batch)
    start = time.perf_counter()
    for _ in range(steps):
        step(batch)
    return steps * len(batch["label"]) / (time.perf_counter() - start)


def prepare_datasets(server: SeaweedServer, root: Path, settings: BenchSettings) -> dict[str, str]:
    """Image and latent shards, each in a local folder and in a bucket, with identical bytes."""
    bucket = server.create_bucket(f"bench-{os.getpid()}")
    places = {"image_local": str(root / "images"), "image_s3": f"s3://{bucket}/images",
              "latent_local": str(root / "latents"), "latent_s3": f"s3://{bucket}/latents"}
    for key in ("image_local", "image_s3"):
        write_image_shards(embedded_mnist(), places[key], settings.shard_size)
    encoder = VAEEncoder(settings.vae_weights) if settings.vae_weights else PoolEncoder(factor=4, channels=4)
    for kind in ("local", "s3"):
        encode_latent_shards(places[f"image_{kind}"], places[f"latent_{kind}"], encoder)
    for kind in ("image", "latent"):
        if read_manifest(places[f"{kind}_local"]).dataset_hash != read_manifest(places[f"{kind}_s3"]).dataset_hash:
            raise RuntimeError(f"{kind} shards differ between local disk and S3; the comparison would be unfair")
    return places


def run_data_benchmark(settings: BenchSettings, make_train_step: Callable[[dict], Callable[[dict], None]] | None
                       ) -> dict:
    """Start SeaweedFS, write the shards, and measure everything the issue asks for.

    Args:
        settings: sizes and repetitions.
        make_train_step: given one latent batch, returns a callable running one training step on a
            batch (None skips the training comparison).

    Returns:
        A dict of figures (samples/s and ratios).
    """
    with tempfile.TemporaryDirectory(dir=settings.workdir) as tmp:
        server = SeaweedServer(Path(tmp) / "seaweed").start()
        try:
            with environment(server.env()):
                places = prepare_datasets(server, Path(tmp), settings)
                results = {
                    "images": compare_rates(places["image_local"], places["image_s3"], settings,
                                            settings.image_epochs, server.process.pid),
                    "latents": compare_rates(places["latent_local"], places["latent_s3"], settings,
                                             settings.latent_epochs, server.process.pid),
                }
                if make_train_step is not None:
                    batch = next(iter(build_stream(places["latent_local"], settings.batch_size, 0, 1, seed=0)))
                    train = step_rate(make_train_step(batch), batch)
                    results["train_step_samples_per_s"] = train
                    results["latent_stream_over_train"] = results["latents"]["s3_samples_per_s"] / train
        finally:
            server.stop()
    return results
