"""Scoring a run's stage-2 export at the end of the pipeline, in this process or on Ray workers.

The settings come from the run config's `evaluation` section and from what the run trained on: the
reference is the training data itself (for embedded Stacked MNIST, the same draw), the samplers
and their settings are read from the export, and the results land in `<run>/eval/` and in
`summary.json`.
"""

from __future__ import annotations

from pathlib import Path

from distdiff.config import RunConfig
from distdiff.eval.evaluator import EvalSettings, evaluate_worker, preflight
from distdiff.eval.report import metric_key, results_markdown

SUMMARY_FIELDS = ("label", "nfe", "parameters", "sec_per_image", "precision", "recall", "modes", "reverse_kl",
                  "num_samples")


def reference_spec(cfg: RunConfig) -> str:
    """The evaluator's reference for the run's training data (see `distdiff.eval.reference`)."""
    source = cfg.data.source
    if source == "embedded-stacked-mnist":
        return f"{source}:{cfg.evaluation.reference_size or cfg.data.stacked_size}:{cfg.seed}"
    return source


def needs_classifier(cfg: RunConfig) -> bool:
    """FD-MNIST features and Stacked-MNIST modes need the MNIST classifier."""
    return cfg.evaluation.features == "fd-mnist" or cfg.data.source == "embedded-stacked-mnist"


def eval_settings(cfg: RunConfig, export: str, out: str, device: str) -> EvalSettings:
    """Evaluator settings for the run's export.

    Args:
        cfg: the run config.
        export: the stage-2 export folder or s3:// prefix.
        out: where eval.json, eval.md and the grids go.
        device: "cpu" or "cuda".
    """
    from distdiff.eval.classifier import embedded_classifier

    ev = cfg.evaluation
    classifier = ev.classifier or (str(embedded_classifier()) if needs_classifier(cfg) else None)
    return EvalSettings(
        checkpoint=export, samplers=tuple(ev.samplers), num_samples=ev.num_samples, seed=cfg.seed,
        batch_size=ev.batch_size, reference=reference_spec(cfg), features=ev.features, classifier=classifier,
        pr_count=ev.pr_samples, grid_count=ev.grid_count, out=out, device=device,
    )


def summary_table(results: dict) -> dict:
    """The compact quality / coverage / speed table that `summary.json` keeps."""
    key = metric_key(results["metric"])
    rows = {row["key"]: {"metric": row[key], **{f: row.get(f) for f in SUMMARY_FIELDS}} for row in results["models"]}
    return {"metric": results["metric"], "num_samples": results["num_samples"],
            "reference": results["reference"], "rows": rows}


def evaluate_run(cfg: RunConfig, export: str, out: str, on_ray: bool, device: str = "cpu") -> dict:
    """Score the export as `cfg.evaluation` asks; prints and returns the evaluator's results.

    Args:
        cfg: the run config.
        export: the stage-2 export folder or s3:// prefix.
        out: output folder or s3:// prefix.
        on_ray: evaluate on Ray actors (`evaluation.num_workers`, else `distributed.num_workers`), else in this
            process.
        device: where the networks run.
    """
    settings = eval_settings(cfg, export, out, device)
    preflight(settings)
    print(f"evaluating {export}: {settings.num_samples} samples per model and sampler, "
          f"features {settings.features}, reference {settings.reference}", flush=True)
    if on_ray:
        from distdiff.launchers.ray_eval import run_eval_ray

        dist, ev = cfg.distributed, cfg.evaluation
        results = run_eval_ray(settings, ev.num_workers or dist.num_workers,
                               cpus_per_worker=ev.cpus_per_worker or dist.cpus_per_worker,
                               gpus_per_worker=1.0 if dist.use_gpu else 0.0)
    else:
        from distdiff.eval.stats import local_reduce_sum

        results = evaluate_worker(0, 1, local_reduce_sum, settings)
    print(results_markdown(results), flush=True)
    return results


def local_paths(cfg: RunConfig, run_dir: Path) -> tuple[str, str]:
    """(export, eval output) of a run whose files are in `run_dir`."""
    return str(run_dir / "ldm" / "export"), str(run_dir / "eval")
