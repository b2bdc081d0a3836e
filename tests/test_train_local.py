"""The local trainer end to end: outputs, exact resume, NaN stops, corrupt checkpoints, CLI errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from distdiff.cli import main
from distdiff.config import RunConfig, load_config
from distdiff.launchers.local import run_pipeline, train_ldm, train_vae
from distdiff.train.checkpoint import CheckpointError
from distdiff.train.metrics import read_metrics

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "pipeline-smoke.yaml"


# The finished run's members: the LDM, the DDGAN and the one-step GAN baseline.
WITH_GAN = ("gan.enabled=true", "gan.preset=tiny")


def smoke_config(tmp_path: Path, *overrides: str) -> RunConfig:
    return load_config(RunConfig, SMOKE, [f"output_dir={tmp_path}", *overrides])


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, quick_classifier_stem):
    """One whole smoke pipeline (LDM, DDGAN and GAN, then the evaluator on its own export), shared by the
    tests that inspect its outputs."""
    tmp = tmp_path_factory.mktemp("pipeline")
    cfg = smoke_config(tmp, *WITH_GAN, "evaluation.enabled=true",
                       "evaluation.num_samples=8", "evaluation.batch_size=4", "evaluation.pr_samples=6",
                       f"evaluation.classifier={quick_classifier_stem}")
    summary = run_pipeline(cfg)
    return cfg, tmp / cfg.name, summary


def test_pipeline_writes_everything_a_user_expects(finished_run):
    cfg, run, summary = finished_run
    assert (run / "config.yaml").is_file() and (run / "summary.json").is_file()
    written = json.loads((run / "summary.json").read_text())
    assert written == {k: v for k, v in summary.items() if k != "evaluation_results"}
    for stage in ("vae", "ldm"):
        records = read_metrics(run / stage / "metrics.jsonl")
        assert records[-1]["step"] == 6
        assert list((run / stage / "checkpoints").glob("step-00000006/COMPLETE"))
    assert (run / "vae" / "export" / "vae.safetensors").is_file()
    export = json.loads((run / "ldm" / "export" / "export.json").read_text())
    assert set(export["files"]) == {"unet", "unet_ema", "ddgan_generator", "ddgan_generator_ema",
                                    "ddgan_discriminator", "gan_generator", "gan_generator_ema", "gan_discriminator"}
    assert [m["name"] for m in export["models"]] == ["ldm", "ddgan", "gan"]
    assert export["models"][0]["samplers"] == [{"name": "ddpm"}, {"name": "ddim", "steps": 5, "eta": 0.0}]
    assert export["models"][2]["schedule"] == {"kind": "vp", "num_steps": 1, "beta_min": 0.1, "beta_max": 20.0}
    samples = {p.name for p in (run / "ldm" / "samples").glob("*.png")}
    assert {"ldm-ddpm50-final.png", "ldm-ddim5-final.png", "ddgan-4step-final.png", "gan-1step-final.png",
            "comparison-final.png"} <= samples
    assert (run / "vae" / "samples" / "vae_reconstructions-latest.png").is_file()
    sampling = summary["sampling"]
    assert sampling["ddgan-4step"]["nfe"] == 4 and sampling["ldm-ddpm50"]["nfe"] == 50
    assert sampling["gan-1step"]["nfe"] == 1 and sampling["gan-1step"]["label"] == "GAN-1"
    assert all(v["seconds_per_image"] > 0 and v["parameters"] > 0 for v in sampling.values())
    assert summary["stages"]["ldm"]["steps"] == 6 and summary["stages"]["ldm"]["images_per_sec"] > 0


def test_pipeline_evaluates_its_own_export(finished_run):
    """The evaluator scores the checkpoint the trainer wrote, with the samplers it was exported with."""
    cfg, run, summary = finished_run
    table = summary["evaluation"]
    assert table["metric"] == "FD-MNIST" and table["num_samples"] == 8
    assert list(table["rows"]) == ["ldm-ddpm50", "ldm-ddim5", "ddgan-4step", "gan-1step"]
    for row in table["rows"].values():
        assert row["metric"] > 0 and row["num_samples"] == 8 and row["parameters"] > 0
    results = summary["evaluation_results"]
    assert results["checkpoint"] == str(run / "ldm" / "export")
    assert {"reference", "ldm-ddpm50", "gan-1step"} <= set(results["phase_seconds"])
    assert {"eval.json", "eval.md", "comparison.png", "samples_gan-1step.png"} <= {
        p.name for p in (run / "eval").iterdir()}


def test_discriminator_probe_on_the_trained_export(finished_run, tmp_path, capsys):
    """The probe scores the run's own discriminators and fresh ones per step t; after six training steps
    the generators are still far from the data, so a fresh discriminator tells their clean pairs apart."""
    from distdiff.eval.checkpoint import CheckpointError as ExportError
    from distdiff.eval.gan_probe import main as probe_main
    from distdiff.eval.gan_probe import probe

    _, run, _ = finished_run
    result = probe(str(run), "ddgan", steps=15, batch_size=16, num_test=32, num_train=64)
    assert [row["t"] for row in result["trained"]] == [row["t"] for row in result["fresh"]] == [0, 1, 2, 3]
    assert all(0.0 <= row["auc"] <= 1.0 for row in result["trained"] + result["fresh"])
    assert result["fresh"][0]["auc"] > 0.9, result["fresh"]
    assert result["generator"] == "ddgan_generator"

    out = tmp_path / "probe.json"
    assert probe_main(["--checkpoint", str(run), "--model", "gan", "--ema", "--steps", "15", "--batch-size", "16",
                       "--num-test", "32", "--num-train", "64", "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written["generator"] == "gan_generator_ema" and len(written["fresh"]) == 1
    assert written["fresh"][0]["auc"] > 0.9, written["fresh"]
    assert "| 0 | " in capsys.readouterr().out  # the one-step GAN's table has one row, t = 0
    with pytest.raises(ExportError, match="needs a DDGAN"):
        probe(str(run), "ldm", steps=1, num_test=4, num_train=4)


def test_vae_export_carries_the_latent_scale_factor(finished_run):
    _, run, _ = finished_run
    meta = json.loads((run / "vae" / "export" / "vae.json").read_text())
    weights = load_file(str(run / "vae" / "export" / "vae.safetensors"))
    assert float(weights["scale_factor"]) == pytest.approx(meta["metadata"]["latent_scale_factor"])
    assert float(weights["scale_factor"]) != 1.0


def _final_weights(run: Path, stage: str, step: int) -> dict:
    ckpt = run / stage / "checkpoints" / f"step-{step:08d}"
    return {p.parent.name: load_file(str(p)) for p in ckpt.glob("engines/*/model.safetensors")}


def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path, finished_run):
    """Stop after 3 steps, rerun with the same output dir: same losses and bit-identical weights."""
    cfg_full, run_full, _ = finished_run
    cfg = smoke_config(tmp_path, *WITH_GAN)
    shutil.copytree(run_full / "vae" / "export", tmp_path / cfg.name / "vae" / "export")
    train_ldm(smoke_config(tmp_path, *WITH_GAN, "stage2.steps=3"))
    train_ldm(cfg)
    run = tmp_path / cfg.name
    full, resumed = read_metrics(run_full / "ldm" / "metrics.jsonl"), read_metrics(run / "ldm" / "metrics.jsonl")
    loss_keys = [k for k in full[-1] if k.endswith("loss")]
    assert loss_keys
    for a, b in zip([r for r in full if r["step"] > 3], [r for r in resumed if r["step"] > 3]):
        assert a["step"] == b["step"] and all(a[k] == b[k] for k in loss_keys)
    want, got = _final_weights(run_full, "ldm", 6), _final_weights(run, "ldm", 6)
    assert want.keys() == got.keys() == {"unet", "ddgan_g", "ddgan_d", "gan_g", "gan_d"}
    for name in want:
        assert all(torch.equal(want[name][k], got[name][k]) for k in want[name]), name


def test_nan_loss_stops_with_step_and_model_named_and_keeps_last_checkpoint(tmp_path):
    cfg = smoke_config(tmp_path, "stage1.steps=3")
    train_vae(cfg)
    ckpts = tmp_path / cfg.name / "vae" / "checkpoints"
    before = sorted(p.name for p in ckpts.iterdir())
    # A NaN KL weight (YAML's .nan) makes the resumed run's first loss NaN.
    bad = smoke_config(tmp_path, "stage1.steps=6", "vae.kl_weight=.nan")
    with pytest.raises(Exception) as err:
        train_vae(bad)
    text = str(err.value)
    assert "vae loss is nan" in text and "step 3" in text and "step-00000003" in text
    assert sorted(p.name for p in ckpts.iterdir()) == before


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_damaged_newest_checkpoint_is_passed_over_for_the_older_one(tmp_path, capfd):
    cfg = smoke_config(tmp_path, "stage1.steps=6")
    train_vae(cfg)
    ckpts = tmp_path / cfg.name / "vae" / "checkpoints"
    assert json.loads((ckpts / "step-00000006" / "manifest" / "rank-00000.json").read_text())
    _truncate(ckpts / "step-00000006" / "engines" / "vae" / "optimizer.pt")
    capfd.readouterr()
    assert train_vae(smoke_config(tmp_path, "stage1.steps=9"))["steps"] == 9
    out, err = capfd.readouterr()
    assert "step-00000006 is damaged: engines/vae/optimizer.pt has " in err and "bytes where" in err
    assert "resumed from" in out and "step-00000003 at step 3" in out
    # The retrained step 6 replaced the damaged folder.
    assert not _damage_of(ckpts / "step-00000006")


def _damage_of(directory: Path):
    from distdiff.train.checkpoint import local_damage

    return local_damage(directory)


def test_no_whole_checkpoint_stops_with_status_3_and_names_each_damage(tmp_path, capsys):
    cfg = smoke_config(tmp_path, "stage1.steps=6")
    train_vae(cfg)
    ckpts = tmp_path / cfg.name / "vae" / "checkpoints"
    weights = ckpts / "step-00000006" / "engines" / "vae" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one flipped bit: the size still matches, the SHA-256 does not
    weights.write_bytes(bytes(data))
    _truncate(ckpts / "step-00000003" / "state.json")
    with pytest.raises(CheckpointError, match="no loadable checkpoint"):
        train_vae(smoke_config(tmp_path, "stage1.steps=9"))
    assert main(["train-vae", "--local", "--config", str(SMOKE), f"output_dir={tmp_path}", "stage1.steps=9"]) == 3
    err = capsys.readouterr().err
    assert "step-00000006 (engines/vae/model.safetensors differs from the file that was written" in err
    assert "step-00000003 (state.json has " in err
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-00000003", "step-00000006"]  # nothing deleted


def test_cli_dry_run_and_clear_errors(tmp_path, capsys):
    assert main(["pipeline", "--config", str(SMOKE), "--dry-run", f"output_dir={tmp_path}"]) == 0
    assert "config is valid" in capsys.readouterr().out
    assert not (tmp_path / "pipeline-smoke").exists()
    assert main(["train-ldm", "--config", str(SMOKE), "--dry-run", "ldm.preset=huge"]) == 2
    err = capsys.readouterr().err
    assert "ldm.preset" in err and "huge" in err and "tiny" in err  # the valid names are listed
    # The 4x4 latents of an f=8 VAE on 32x32 digits cannot pass through a U-Net that downsamples by 8.
    args = ["train-ldm", "--config", str(SMOKE), "--dry-run", "vae.preset=kl-f8", "ldm.preset=ldm-latent32"]
    assert main(args) == 2
    assert "does not divide the 4x4 latents" in capsys.readouterr().err
    assert main(["train-vae", "--dry-run", "data.sorce=x"]) == 2
    assert "unknown key 'data.sorce'" in capsys.readouterr().err
    # A checkpoint between two optimizer steps would lose the partly accumulated gradient.
    assert main(["train-ldm", "--config", str(SMOKE), "--dry-run", "distributed.gradient_accumulation_steps=4"]) == 2
    assert "stage2.steps=6 is not a multiple of distributed.gradient_accumulation_steps=4" in capsys.readouterr().err
    assert main(["pipeline", "--config", str(SMOKE), "--dry-run", "ldm.ddim_steps=0"]) == 2
    assert "ldm.ddim_steps" in capsys.readouterr().err
    assert main(["train-ldm", "--config", str(SMOKE), "--dry-run", f"vae.checkpoint={tmp_path}/vae"]) == 2
    assert f"vae.checkpoint={tmp_path}/vae: no VAE export there" in capsys.readouterr().err


def test_pipeline_with_a_given_vae_trains_no_vae_of_its_own(finished_run, tmp_path, capsys):
    _, run, _ = finished_run
    given = str(run / "vae" / "export" / "vae")
    summary = run_pipeline(smoke_config(tmp_path, f"vae.checkpoint={given}", "ddgan.enabled=false",
                                        "stage2.steps=2", "stage2.checkpoint_every=2"))
    assert "[vae] not trained: stage 2 uses the export" in capsys.readouterr().out
    assert summary["stages"]["vae"] == {"trained": False, "export": given, "preempted": False}
    assert summary["stages"]["ldm"]["steps"] == 2
    assert not (tmp_path / "pipeline-smoke" / "vae").exists()
    assert (tmp_path / "pipeline-smoke" / "ldm" / "export" / "export.json").is_file()


def test_stage2_without_a_vae_says_how_to_get_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="run stage 1 first"):
        train_ldm(smoke_config(tmp_path))


def test_sigterm_checkpoints_stops_with_status_75_and_the_rerun_resumes(tmp_path):
    """A scheduler's SIGTERM mid-stage: a complete checkpoint of that step, exit 75, no export; rerun resumes."""
    import os
    import signal
    import subprocess
    import sys
    import time

    repo = SMOKE.parents[1]
    run = tmp_path / "pipeline-smoke" / "vae"
    cmd = [sys.executable, str(repo / "launch" / "train_vae.py"), "--local", "--config", str(SMOKE),
           f"output_dir={tmp_path}", "stage1.steps=100000", "stage1.checkpoint_every=100000", "stage1.log_every=1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while not (run / "metrics.jsonl").is_file() or len(read_metrics(run / "metrics.jsonl")) < 3:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 75, out
    saved = [p.parent.name for p in (run / "checkpoints").glob("step-*/COMPLETE")]
    assert len(saved) == 1 and "stopped on SIGTERM" in out
    step = int(saved[0].split("-")[1])
    assert not (run / "export").exists()  # a half-trained VAE is never exported as the result
    rerun = subprocess.run([*cmd[:-3], f"stage1.steps={step + 2}"], capture_output=True, text=True,
                           env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert (run / "export" / "vae.safetensors").is_file()
    assert read_metrics(run / "metrics.jsonl")[-1]["step"] == step + 2
