"""The trilemma study: quality, mode coverage and sampling speed of DDPM, DDGAN and a one-step GAN.

One command trains a latent diffusion U-Net, a Denoising Diffusion GAN and the one-step GAN baseline
(the DDGAN's networks and losses with T = 1) jointly on one latent stream, scores every model and
sampler with the distributed evaluator (the same samples count, seeds and reference for all), and
writes `trilemma.json`, `trilemma.md`, `trilemma.png` (FID against seconds per image) and
`trilemma-curves.png` (every member's training losses) beside the run. The targets of the DDGAN
paper's claim are checked in the table, measured, never assumed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from distdiff.config import RunConfig
from distdiff.provenance import describe

# The tiny, minutes-long variant the tests run (`--quick`): the same code path on a few hundred images.
QUICK_OVERRIDES = (
    "vae.preset=tiny", "ldm.preset=tiny", "ddgan.preset=tiny", "gan.preset=tiny", "ldm.num_steps=50",
    "ldm.ddim_steps=5", "data.stacked_size=256", "stage1.steps=4", "stage2.steps=4", "stage1.batch_size=8",
    "stage2.batch_size=8", "stage1.log_every=2", "stage2.log_every=2", "stage1.checkpoint_every=4",
    "stage2.checkpoint_every=4", "stage1.sample_every=0", "stage2.sample_every=0", "stage1.num_samples=8",
    "stage2.num_samples=8", "vae.scale_batches=2", "evaluation.num_samples=12", "evaluation.reference_size=24",
    "evaluation.pr_samples=8", "evaluation.batch_size=6", "evaluation.grid_count=8",
)
TARGETS = {"fid_ratio": 1.3, "speedup": 200.0, "param_ratio": 2.0, "coverage_ratio": 0.95}


def _rows_by_role(rows: list[dict]) -> dict[str, dict]:
    """The rows the targets compare: the LDM under DDPM, the DDGAN and the GAN."""
    roles = {}
    for row in rows:
        if row.get("model") == "ldm" and row.get("sampler") == "ddpm":
            roles["ddpm"] = row
        elif row.get("model") in ("ddgan", "gan"):
            roles[row["model"]] = row
    return roles


def _ratio(a, b) -> float | None:
    if a is None or b is None or b == 0 or not (math.isfinite(a) and math.isfinite(b)):
        return None
    return a / b


def check_targets(results: dict) -> dict:
    """The DDGAN paper's claims, measured on this run: each value, its target and whether it holds.

    Args:
        results: the evaluator's results (rows with model and sampler names).

    Returns:
        {name: {"value", "target", "met", "what"}}; value None where a row is missing.
    """
    from distdiff.eval.report import metric_key

    key = metric_key(results["metric"])
    roles = _rows_by_role(results["models"])
    ddpm, ddgan, gan = roles.get("ddpm"), roles.get("ddgan"), roles.get("gan")
    get = lambda row, field: row.get(field) if row else None  # noqa: E731
    params = [get(ddpm, "parameters"), get(ddgan, "parameters")]
    checks = {
        "fid_ratio": (_ratio(get(ddgan, key), get(ddpm, key)), "<=",
                      f"DDGAN {results['metric']} / LDM DDPM {results['metric']}"),
        "speedup": (_ratio(get(ddpm, "sec_per_image"), get(ddgan, "sec_per_image")), ">=",
                    "LDM DDPM seconds per image / DDGAN seconds per image"),
        "param_ratio": (_ratio(max(params), min(params)) if None not in params else None, "<=",
                        "larger / smaller parameter count of the U-Net and the DDGAN generator"),
        "coverage_ratio": (_ratio(get(ddgan, "modes"), get(ddpm, "modes")), ">=",
                           "modes covered by the DDGAN / by LDM DDPM"),
    }
    out = {}
    for name, (value, sense, what) in checks.items():
        target = TARGETS[name]
        met = None if value is None else (value <= target if sense == "<=" else value >= target)
        out[name] = {"value": value, "target": f"{sense} {target:g}", "met": met, "what": what}
    beats = None if get(ddgan, "modes") is None or get(gan, "modes") is None else ddgan["modes"] > gan["modes"]
    out["ddgan_covers_more_than_gan"] = {"value": [get(ddgan, "modes"), get(gan, "modes")], "target": "DDGAN > GAN",
                                         "met": beats, "what": "modes covered by the DDGAN and by the GAN"}
    return out


def _fmt(value, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) >= 10 ** -digits or value == 0 else f"{value:.2e}"
    return str(value)


def study_markdown(study: dict) -> str:
    """The study as markdown: the table of models and samplers, then the targets."""
    metric, results = study["metric"], study["evaluation"]
    key = metric.lower().replace("-", "_")
    num_modes = next((row["num_modes"] for row in results["models"] if row.get("num_modes")), "-")
    lines = [
        f"Trilemma study `{study['name']}`: {results['num_samples']} samples per model and sampler, {metric} with "
        f"`{results['extractor']}` against {results['reference']['num_images']} reference images "
        f"(`{results['reference']['name']}`), device {results['device']}, {results['world_size']} worker(s).",
        "",
        f"| Model | {metric}↓ | Precision↑ | Recall↑ | Modes (of {num_modes})↑ | Reverse KL↓ | NFE↓ | s / image↓ "
        "| Parameters |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["models"]:
        lines.append(
            f"| {row['label']} | {_fmt(row[key])} | {_fmt(row.get('precision'))} | {_fmt(row.get('recall'))} | "
            f"{_fmt(row.get('modes'))} | {_fmt(row.get('reverse_kl'), 3)} | {row['nfe']} | "
            f"{_fmt(row['sec_per_image'], 4)} | {_fmt(row.get('parameters'))} |")
    ref = results["reference"]
    if ref.get("modes") is not None:
        lines.append(f"| Reference data ({ref['num_images']} images) | - | - | - | {ref['modes']} | "
                     f"{_fmt(ref['reverse_kl'], 3)} | - | - | - |")
    lines += ["", "| Claim | Measured | Target | Met |", "|---|---|---|---|"]
    for name, check in study["targets"].items():
        met = {True: "yes", False: "no", None: "-"}[check["met"]]
        lines.append(f"| {check['what']} | {_fmt(check['value'])} | {check['target']} | {met} |")
    lines += ["", "Seconds per image: the whole draw (every network evaluation and the VAE decode) at batch "
                  f"{results['batch_size']}, after one untimed warm-up call, summed over workers. Wall time of "
                  "the study: "
                  f"{study['wall_seconds'] / 60:.1f} min."]
    if study.get("provenance"):
        lines += ["", describe(study["provenance"])]
    return "\n".join(lines) + "\n"


def plot_study(study: dict, path: Path) -> Path:
    """`trilemma.png`: the metric against seconds per image (log axis), one labelled point per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric, results = study["metric"], study["evaluation"]
    key = metric.lower().replace("-", "_")
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for row in results["models"]:
        x, y = row["sec_per_image"], row[key]
        ax.scatter([x], [y], s=60)
        modes = f", {row['modes']} modes" if row.get("modes") is not None else ""
        ax.annotate(f"{row['label']}{modes}", (x, y), textcoords="offset points", xytext=(6, 6), fontsize=9)
    ax.set_xscale("log")
    ax.set_xlabel("seconds per image (log scale)")
    ax.set_ylabel(f"{metric} (lower is better)")
    ax.set_title(f"{study['name']}: quality vs sampling time, {results['num_samples']} samples each")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# The losses `plot_curves` draws, per stage-2 member.
CURVES = {"ldm": ("ldm/loss",), "ddgan": ("ddgan/d_loss", "ddgan/g_loss"), "gan": ("gan/d_loss", "gan/g_loss")}


def plot_curves(metrics_path: Path, path: Path) -> Path | None:
    """`trilemma-curves.png`: each member's training losses against the step, one panel per member.

    A GAN whose discriminator loss sits at ln 4 (about 1.39, chance for the non-saturating loss on real
    and fake halves) is not separating them; the dotted line marks it. Returns None without metrics.
    """
    from distdiff.train.metrics import read_metrics

    if not metrics_path.is_file():
        return None
    records = read_metrics(metrics_path)
    panels = {m: keys for m, keys in CURVES.items() if any(keys[0] in r for r in records)}
    if not panels:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6), squeeze=False)
    for ax, (member, keys) in zip(axes[0], panels.items()):
        for key in keys:
            points = [(r["step"], r[key]) for r in records if key in r]
            ax.plot(*zip(*points), label=key.split("/")[1])
        if member != "ldm":
            ax.axhline(math.log(4), color="grey", linestyle=":", label="ln 4 (chance)")
        ax.set_title(member)
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_study(cfg: RunConfig, summary: dict, directory: Path, wall_seconds: float,
                provenance: dict | None = None) -> dict:
    """Build the study record from a finished pipeline and write trilemma.json / .md / .png.

    `provenance` (see `distdiff.provenance`): the command, its start and end, the host and the commit.
    """
    results = summary["evaluation_results"]
    study = {"name": cfg.name, "metric": results["metric"], "evaluation": results,
             "targets": check_targets(results), "training": summary["stages"], "sampling": summary["sampling"],
             "wall_seconds": wall_seconds, "provenance": provenance}
    (directory / "trilemma.json").write_text(json.dumps(study, indent=1))
    (directory / "trilemma.md").write_text(study_markdown(study))
    plot_study(study, directory / "trilemma.png")
    plot_curves(directory / "ldm" / "metrics.jsonl", directory / "trilemma-curves.png")
    return study
