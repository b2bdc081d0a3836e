"""Discriminator probe: can a DDGAN's real and generated pairs still be told apart, step by step?

A DDGAN's discriminator loss sitting at ln 4 (both logits near 0) has two readings: the generator's
pairs match the data, or the discriminator has stopped seeing a difference that is there. The probe
separates them with a classifier two-sample test per denoising step t:

- the run's own discriminator scores held-out real pairs (x_t, x_{t+1}) against generated ones
  (x_t drawn from the posterior around G(x_{t+1}, t, z)); its AUC per t says what it still sees;
- a fresh discriminator of the same architecture is trained for `steps` steps against the frozen
  generator (the run's own discriminator step: non-saturating loss, Adam 0.5 / 0.9, no R1) and
  scored on the same held-out pairs. An AUC near 1 where the run's own is near 0.5 means the
  generator's pairs are easy to tell apart and the trained discriminator lost track of them: a
  problem of the training dynamics, not of the discriminator's capacity.

AUC is the Mann-Whitney statistic: the share of (real, generated) pairs the logits order correctly,
ties counted half. Real images come from the reference data (an embedded dataset name or shards):
the first `num_test` are scored and held out from the fresh discriminator's training (the run itself
may have trained on them), the next `num_train` train it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch

from distdiff.data.memory import uint8_to_unit_range
from distdiff.diffusion import ddgan_posterior_sample, ddgan_q_sample_pairs, randn


def auc(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Mann-Whitney AUC of logits real (N,) against fake (M,): P(real > fake) + P(real = fake) / 2."""
    greater = (real[:, None] > fake[None, :]).double().mean()
    ties = (real[:, None] == fake[None, :]).double().mean()
    return float(greater + 0.5 * ties)


def reference_images(spec: str, num: int) -> np.ndarray:
    """The first `num` uint8 (N, C, H, W) images of a reference (see `distdiff.eval.reference`)."""
    from distdiff.eval.reference import ReferenceDataError, open_reference

    chunks, have = [], 0
    for _, batch in open_reference(spec).rank_batches(0, 1, 256):  # (B, C, H, W), in dataset order
        chunks.append(batch.numpy())
        have += len(batch)
        if have >= num:
            break
    images = np.concatenate(chunks)[:num] if chunks else np.zeros((0,))
    if len(images) < num:
        raise ReferenceDataError(f"reference {spec} has {len(images)} images; the probe needs {num}")
    return images


class PairMaker:
    """Real and generated DDGAN pairs at given steps, from images through the export's latent space."""

    def __init__(self, schedule, latents, generator_net, nz: int):
        self.schedule, self.latents, self.generator_net, self.nz = schedule, latents, generator_net, nz

    @torch.no_grad()
    def encode(self, images: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        """uint8 (B, C, H, W) -> x0 (B, c, h, w) as training saw it: [-1, 1], then a posterior sample."""
        return self.latents({"image": uint8_to_unit_range(images)}, rng)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, t: torch.Tensor, rng: torch.Generator):
        """images uint8 (B, C, H, W), t (B,) -> real x_t, generated x_t, x_{t+1}: each (B, c, h, w)."""
        x0 = self.encode(images, rng)
        x_t, x_tp1 = ddgan_q_sample_pairs(self.schedule, x0, t, generator=rng)
        z = randn((len(t), self.nz), rng)
        x0_pred = self.generator_net(x_tp1, t, z)
        fake = ddgan_posterior_sample(self.schedule, x0_pred, x_tp1, t, randn(x_tp1.shape, rng))
        return x_t, fake, x_tp1


@torch.no_grad()
def step_aucs(discs: dict, pairs: PairMaker, images: torch.Tensor, num_steps: int, seed: int) -> dict[str, list]:
    """Per step t, for each named discriminator: its AUC and mean logits on real against generated pairs
    of `images` (one set of pairs per t, shared by all the discriminators)."""
    rows = {name: [] for name in discs}
    for step in range(num_steps):
        rng = torch.Generator().manual_seed(seed + step)
        t = torch.full((len(images),), step, dtype=torch.int64)
        real, fake, x_tp1 = pairs(images, t, rng)
        for name, disc in discs.items():
            real_logits, fake_logits = disc(real, t, x_tp1), disc(fake, t, x_tp1)  # (N,), (N,)
            rows[name].append({"t": step, "auc": auc(real_logits, fake_logits),
                               "real_logit": float(real_logits.mean()), "fake_logit": float(fake_logits.mean()),
                               "logit_std": float(real_logits.std())})
    return rows


class _ProbeUpdater:
    """The `Updater` a DDGAN task trains through: Adam on the fresh discriminator, the generator frozen."""

    def __init__(self, task, disc, generator_net, lr: float):
        self.modules = {task.disc_name: disc, task.gen_name: generator_net}
        self.optimizer = torch.optim.Adam(disc.parameters(), lr=lr, betas=(0.5, 0.9))

    def module(self, name: str):
        return self.modules[name]

    def update(self, name: str, loss: torch.Tensor) -> dict[str, float]:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {}


def train_fresh(disc, pairs: PairMaker, images: torch.Tensor, steps: int, batch_size: int, lr: float, seed: int,
                progress=None):
    """Train `disc` with the run's own discriminator step (`DDGANTask`, no R1) against the frozen generator."""
    from distdiff.tasks import DDGANTask

    rng = torch.Generator().manual_seed(seed)
    task = DDGANTask(pairs.schedule, pairs.nz, r1_gamma=0.0, lazy_reg=1, name="probe")
    updater = _ProbeUpdater(task, disc.train(), pairs.generator_net, lr)
    for step in range(steps):
        idx = torch.randint(0, len(images), (batch_size,), generator=rng)
        x0 = pairs.encode(images[idx], rng)  # (B, c, h, w)
        metrics = task.discriminator_step(x0, updater, step, rng)
        if progress:
            progress(step + 1, metrics["probe/d_loss"])
    return disc.eval()


def probe(checkpoint: str, model: str = "ddgan", reference: str = "embedded-mnist", steps: int = 300,
          batch_size: int = 64, lr: float = 2.5e-4, num_test: int = 500, num_train: int = 4000,
          ema: bool = False, seed: int = 0, progress=None) -> dict:
    """Score a DDGAN export's own discriminator and a freshly trained one, per denoising step.

    Args:
        checkpoint: stage-2 export (or run folder) holding `<model>_generator` and `<model>_discriminator`.
        model: the DDGAN member ("ddgan", or "gan" for the one-step baseline).
        reference: real images (an embedded dataset or a shard folder / s3 prefix).
        steps, batch_size, lr: training of the fresh discriminator.
        num_test: held-out real images per step t.
        num_train: real images the fresh discriminator trains on (after the held-out ones).
        ema: probe the EMA generator (what sampling uses) instead of the raw one the discriminator
            was trained against.
        seed: for the fresh discriminator's initialisation, batches and noise.
        progress: optional callable(step, loss) during the fresh discriminator's training.

    Returns:
        {"model", "generator", "steps", "num_test", "trained": [per-t rows], "fresh": [per-t rows], "seconds"}.
    """
    from distdiff.eval.checkpoint import CheckpointError, EvalCheckpoint
    from distdiff.models import model_from_config
    from distdiff.tasks import LatentSource

    started = time.perf_counter()
    export = EvalCheckpoint(checkpoint, [model])
    spec = export.spec.model(model)
    if spec.kind != "ddgan":
        raise CheckpointError(f"model {model!r} of {checkpoint} is a {spec.kind} model; the probe needs a DDGAN")
    stem = spec.weights.removesuffix("_generator")
    gen_stem = f"{spec.weights}_ema" if ema else spec.weights
    generator_net = export.load_network(gen_stem, "ddgan_generator")
    trained = export.load_network(f"{stem}_discriminator", "ddgan_discriminator")
    images = torch.from_numpy(reference_images(reference, num_test + num_train))
    if tuple(images.shape[1:]) != export.image_shape:
        raise CheckpointError(f"reference {reference} has images of shape {tuple(images.shape[1:])}; "
                              f"{checkpoint} was trained on {export.image_shape}")
    schedule = spec.schedule.build()
    pairs = PairMaker(schedule, LatentSource(export.load_vae()), generator_net, spec.nz)
    test, train = images[:num_test], images[num_test:]
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        fresh = model_from_config(trained.model_config)  # same architecture, new initialisation
    fresh = train_fresh(fresh, pairs, train, steps, batch_size, lr, seed, progress)
    scores = step_aucs({"trained": trained, "fresh": fresh}, pairs, test, schedule.num_steps, seed + 1000)
    return {"model": model, "generator": gen_stem, "steps": steps, "num_test": num_test, "reference": reference,
            **scores, "seconds": time.perf_counter() - started}


def probe_table(result: dict) -> str:
    """The probe's result as a Markdown table, one row per step t."""
    lines = [f"Discriminator probe of `{result['model']}` ({result['generator']}): AUC of real against generated "
             f"pairs on {result['num_test']} held-out images per step; the fresh discriminator trained "
             f"{result['steps']} steps against the frozen generator.", "",
             "| t | AUC, run's discriminator | its logits real / generated | AUC, fresh discriminator |",
             "|---|---|---|---|"]
    for own, new in zip(result["trained"], result["fresh"]):
        lines.append(f"| {own['t']} | {own['auc']:.3f} | {own['real_logit']:+.4f} / {own['fake_logit']:+.4f} "
                     f"| {new['auc']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="probe_ddgan", description=__doc__.splitlines()[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="stage-2 export or run folder with a DDGAN")
    parser.add_argument("--model", default="ddgan", help="the DDGAN member: ddgan (default) or gan")
    parser.add_argument("--reference", default="embedded-mnist",
                        help="real images: embedded-mnist, embedded-stacked-mnist[:NUM[:SEED]], or shards")
    parser.add_argument("--steps", type=int, default=300, help="training steps of the fresh discriminator")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2.5e-4, help="its Adam learning rate")
    parser.add_argument("--num-test", type=int, default=500, help="held-out real images per step t")
    parser.add_argument("--num-train", type=int, default=4000, help="real images it trains on")
    parser.add_argument("--ema", action="store_true", help="probe the EMA generator instead of the raw one")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="also write the result as JSON here")
    args = parser.parse_args(argv)
    from tqdm import tqdm

    with tqdm(total=args.steps, desc="fresh discriminator", file=sys.stdout, mininterval=1.0) as bar:
        def progress(step: int, loss: float) -> None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}")

        result = probe(args.checkpoint, args.model, args.reference, args.steps, args.batch_size, args.lr,
                       args.num_test, args.num_train, args.ema, args.seed, progress)
    print(probe_table(result))
    print(f"probe took {result['seconds']:.0f} s")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return 0
