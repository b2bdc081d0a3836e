"""The `distdiff` command: train-vae, train-ldm, train-seg, pipeline and trilemma, each on a YAML config plus overrides.

Every subcommand resolves the config (file + dotted `key=value` overrides), validates it against
the model registry and the data before any work starts, and with `--dry-run` stops there.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from distdiff.config import ConfigError, RunConfig, dump_yaml, load_config

DESCRIPTIONS = {
    "train-vae": "Stage 1: train the KL-VAE on images and export it with its latent scale factor.",
    "train-ldm": "Stage 2: train the latent diffusion U-Net and the DDGAN jointly on the VAE's latents.",
    "train-seg": "The segmentation U-Net (Ronneberger et al.) on the embedded digit canvases: training tiles "
                 "with mirrored context, overlap-tile inference, held-out pixel accuracy and mean IoU.",
    "pipeline": "The whole pipeline: VAE, then LDM + DDGAN (+ GAN), then the evaluation (if configured) and "
                "summary.json (the embedded demo by default).",
    "trilemma": "The trilemma study: the pipeline with the LDM, the DDGAN and the one-step GAN on one latent "
                "stream, every model and sampler scored alike (FID, precision/recall, Stacked-MNIST modes, "
                "seconds per image), then trilemma.json, trilemma.md and trilemma.png in the run folder.",
}
EPILOG = """overrides are dotted keys, e.g.  stage2.steps=500 ldm.preset=tiny data.source=s3://bucket/cifar10
outputs go to <output_dir>/<name>/: config.yaml, vae/ and ldm/ (checkpoints/, samples/*.png,
metrics.jsonl, tensorboard/, export/), summary.json and eval/ for the pipeline, trilemma.* for the study.
exit status: 0 done, 2 bad config, 3 stopped on a failure that no retry can fix (a NaN or inf loss,
bad data past the threshold, no loadable checkpoint; never retried, whatever distributed.max_failures
says), 75 stopped early by SIGTERM after a checkpoint (run the same command again to resume),
1 any other failure."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distdiff", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in DESCRIPTIONS.items():
        p = sub.add_parser(name, help=text, description=text, epilog=EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--config", help="YAML run config (default: the built-in embedded-MNIST demo)")
        p.add_argument("--local", action="store_true",
                       help="run in this process (CPU or one GPU) instead of on Ray workers")
        p.add_argument("--dry-run", action="store_true", help="resolve, validate and print the config, then exit")
        p.add_argument("--verbose", action="store_true",
                       help="keep Ray Train's own INFO lines (one per metrics report) on the console")
        if name == "trilemma":
            p.add_argument("--quick", action="store_true",
                           help="tiny networks, a few steps and a few dozen samples: checks the whole path in "
                                "about two minutes on a 2-core CPU (what the tests run); its numbers mean nothing")
        p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    return parser


def resolve(args: argparse.Namespace) -> RunConfig:
    """Load and validate the run config named by the arguments."""
    from distdiff.train.validation import validate_run

    overrides = list(args.overrides)
    if getattr(args, "quick", False):
        from distdiff.trilemma import QUICK_OVERRIDES

        overrides = [*QUICK_OVERRIDES, *overrides]
    if args.command == "trilemma":
        overrides.append("evaluation.enabled=true")  # the study is the evaluation
    cfg = load_config(RunConfig, args.config, overrides)
    stage = {"train-vae": "vae", "train-ldm": "ldm", "train-seg": "seg", "pipeline": "all", "trilemma": "all"}[args.command]
    validate_run(cfg, stage)
    from distdiff.train.backends import training_backend

    try:
        training_backend(cfg, "local" if args.local else "ray")  # the backend runs on this launcher
    except ValueError as err:
        raise ConfigError(str(err)) from err
    return cfg


def run(args: argparse.Namespace, cfg: RunConfig) -> dict:
    """Dispatch a validated config to the local or the Ray launcher."""
    if args.local:
        from distdiff.launchers import local as launcher
    else:
        from distdiff.launchers import ray as launcher
    stages = {"train-vae": launcher.train_vae, "train-ldm": launcher.train_ldm, "train-seg": launcher.train_seg}
    if args.command in stages:
        launcher.prepare_run_dir(cfg)
        return stages[args.command](cfg)
    from distdiff.provenance import provenance, utc_now

    started, started_utc = time.perf_counter(), utc_now()
    summary = launcher.run_pipeline(cfg)
    if args.command == "trilemma" and not summary.get("preempted"):
        from distdiff.train.stages import run_dir
        from distdiff.trilemma import study_markdown, write_study

        record = provenance(["distdiff", *args.argv], started_utc)
        study = write_study(cfg, summary, run_dir(cfg), time.perf_counter() - started, record)
        print(study_markdown(study), flush=True)
        print(f"study written to {run_dir(cfg)}/trilemma.{{json,md,png}} and trilemma-curves.png", flush=True)
    return summary


# EX_TEMPFAIL from sysexits.h: "try again later", the meaning of a preempted run.
PREEMPTED_EXIT = 75


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `distdiff` command and of `launch/*.py`."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # recorded with a study's results
    try:
        cfg = resolve(args)
    except (ConfigError, FileNotFoundError) as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    if args.verbose:
        os.environ["DISTDIFF_VERBOSE"] = "1"  # read by the Ray workers (passed on to them)
    if args.dry_run:
        print(dump_yaml(cfg), end="")
        print("config is valid (dry run: nothing was trained)")
        return 0
    from distdiff.train.failures import HOPELESS_ERRORS, HOPELESS_EXIT, HopelessFailure

    try:
        result = run(args, cfg)
    except (HopelessFailure, *HOPELESS_ERRORS) as err:
        print(f"error: {err}", file=sys.stderr)
        return HOPELESS_EXIT
    if result.get("preempted"):
        # Saved and stopped early: a non-zero status tells schedulers (Slurm requeue, KubeRay, CI) that
        # the job is unfinished; the same command resumes it.
        return PREEMPTED_EXIT
    return 0


if __name__ == "__main__":
    sys.exit(main())
