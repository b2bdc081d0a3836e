"""The papers' recipes and the study's config: each resolves and validates (`--dry-run`) as written.

The recipes stream shards from object storage; here each points at a tiny shard dataset of the
right image shape instead (the only override), so the check covers every other value as committed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from data_helpers import write_synthetic
from distdiff.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

# config -> (entry point, image channels, image size, values the dry run must show)
RECIPES = {
    "cifar10-ddgan.yaml": ("train-ldm", 3, 32, {
        ("ddgan", "preset"): "ddgan-cifar10", ("ddgan", "r1_gamma"): 0.02, ("ddgan", "lazy_reg"): 15,
        ("ddgan", "r1_scaling"): "official", ("ddgan", "ema_decay"): 0.9999, ("stage2", "batch_size"): 64,
        ("distributed", "num_workers"): 4, ("stage2", "steps"): 351000, ("data", "hflip"): True,
        ("space",): "pixel"}),
    "cifar10-ddpm.yaml": ("train-ldm", 3, 32, {
        ("ldm", "preset"): "ddpm-cifar10", ("ldm", "ema_decay"): 0.9999, ("stage2", "steps"): 800000,
        ("data", "hflip"): True, ("space",): "pixel"}),
    "celebahq256-ddgan.yaml": ("train-ldm", 3, 256, {
        ("ddgan", "preset"): "ddgan-celebahq256", ("ddgan", "r1_gamma"): 2.0, ("ddgan", "lazy_reg"): 10,
        ("distributed", "num_workers"): 8, ("stage2", "batch_size"): 4}),
    "celebahq256-ldm.yaml": ("pipeline", 3, 256, {
        ("vae", "preset"): "kl-f4", ("ldm", "preset"): "ldm-celebahq256", ("ldm", "schedule"): "scaled_linear",
        ("space",): "latent"}),
    "stacked-mnist-ddgan.yaml": ("train-ldm", 3, 32, {
        ("ddgan", "preset"): "ddgan-stackedmnist", ("evaluation", "num_samples"): 26000}),
}


def _lookup(data: dict, path: tuple[str, ...]):
    for key in path:
        data = data[key]
    return data


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Tiny shard datasets, one per image shape the recipes train on."""
    root = tmp_path_factory.mktemp("recipe-data")
    out = {}
    for channels, size in {(c, s) for _, c, s, _ in RECIPES.values()}:
        dest = root / f"{channels}x{size}"
        write_synthetic(str(dest), n=64, shard_size=16, channels=channels, size=size)
        out[(channels, size)] = dest
    return out


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_resolves_and_validates(name, shards, capsys):
    command, channels, size, expected = RECIPES[name]
    assert main([command, "--config", str(CONFIGS / name), "--dry-run",
                 f"data.source={shards[(channels, size)]}"]) == 0
    printed = capsys.readouterr().out
    assert printed.rstrip().endswith("config is valid (dry run: nothing was trained)")
    resolved = yaml.safe_load(printed.rsplit("config is valid", 1)[0])
    for path, value in expected.items():
        assert _lookup(resolved, path) == value, (name, path)


def test_recipe_optimisers_follow_the_official_commands():
    ddgan = yaml.safe_load((CONFIGS / "cifar10-ddgan.yaml").read_text())["ddgan"]
    assert (ddgan["g_optim"]["lr"], ddgan["d_optim"]["lr"]) == (1.6e-4, 1.25e-4)
    assert ddgan["g_optim"]["betas"] == ddgan["d_optim"]["betas"] == [0.5, 0.9]
    celeba = yaml.safe_load((CONFIGS / "celebahq256-ddgan.yaml").read_text())["ddgan"]
    assert (celeba["g_optim"]["lr"], celeba["d_optim"]["lr"]) == (2.0e-4, 1.0e-4)
    ddpm = yaml.safe_load((CONFIGS / "cifar10-ddpm.yaml").read_text())["ldm"]["optim"]
    assert (ddpm["lr"], ddpm["warmup_steps"], ddpm["grad_clip"]) == (2.0e-4, 5000, 1.0)


@pytest.mark.parametrize("name", ["trilemma.yaml", "trilemma-long.yaml", "mnist-embedded.yaml"])
def test_embedded_configs_validate(name, capsys):
    command = "trilemma" if name.startswith("trilemma") else "pipeline"
    assert main([command, "--config", str(CONFIGS / name), "--dry-run"]) == 0
    assert "config is valid" in capsys.readouterr().out
