"""The evaluator: a plain function each worker calls with (rank, world_size, reduce_sum).

    evaluate_worker(rank, world_size, reduce_sum, settings)

Every worker opens the checkpoint and the reference, generates its share of the samples (one seed
per sample index), quantizes them to uint8 exactly as PNG, extracts features, and accumulates sums;
one sum-reduction per quantity merges the workers. Rank 0 then computes the Fréchet distance
(scipy and torchmetrics), precision/recall, mode coverage and timings, and writes the report.
The same function runs in one process (`local_reduce_sum`), in a `torch.distributed` gloo group
and in Ray workers (which build such a group); only the reduce function differs.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import torch

from distdiff.eval.accumulate import accumulate, generated_batches
from distdiff.eval.cache import ReferenceStats, StatsCache, cache_key
from distdiff.eval.frechet import frechet_distance_from_stats, frechet_distance_torchmetrics
from distdiff.eval.modes import mode_coverage, num_digit_modes
from distdiff.eval.precision_recall import precision_recall
from distdiff.eval.reference import ReferenceDataError, ShardReference, open_reference, rank_batches_of
from distdiff.eval.report import metric_key, write_outputs
from distdiff.eval.stats import ReduceSum

FEATURES = ("inception", "fd-mnist")


@dataclass
class EvalSettings:
    """What to evaluate and how (plain data: it travels to Ray workers)."""

    checkpoint: str | None = None  # stage-2 export folder / run folder / s3:// prefix
    # "all" (every model's exported samplers, with their exported settings) or MODEL[:SAMPLER[:STEPS]]
    samplers: tuple[str, ...] = ("all",)
    num_samples: int = 50000
    seed: int = 0
    batch_size: int = 64
    reference: str | None = None  # dataset folder / s3:// prefix / embedded name
    features: str = "inception"  # "inception" (FID) or "fd-mnist"
    inception_weights: str | None = None
    allow_download: bool = True  # the last resort when no local copy exists (fails fast offline)
    classifier: str | None = None  # MNIST classifier stem: FD-MNIST features and Stacked-MNIST modes
    stats_cache: str | None = None  # folder or s3:// prefix; default beside the dataset
    pr_count: int = 10000  # samples per set for precision/recall (0 disables)
    pr_k: int = 3
    grid_count: int = 64
    out: str | None = None  # default: <checkpoint>/eval
    device: str = "cpu"
    extra: dict = field(default_factory=dict)  # free-form notes copied into eval.json
    progress: bool = True  # progress bars and a line per phase on rank 0


def build_extractor(settings: EvalSettings, image_shape, classifier=None):
    """The feature extractor named by `settings.features`.

    Args:
        settings: evaluation settings.
        image_shape: (C, H, W) of the images.
        classifier: a loaded MNIST classifier (needed for "fd-mnist").

    Returns:
        a feature extractor.
    """
    from distdiff.eval.features import InceptionFeatures, MnistClassifierFeatures

    if settings.features == "inception":
        return InceptionFeatures(settings.inception_weights, settings.device, allow_download=settings.allow_download)
    if settings.features == "fd-mnist":
        if classifier is None:
            raise ValueError("FD-MNIST features need the MNIST classifier: pass --classifier "
                             "(train one with `python launch/train_classifier.py --out PATH`)")
        return MnistClassifierFeatures(classifier, channels=image_shape[0], device=settings.device)
    raise ValueError(f"unknown features {settings.features!r}; valid: {', '.join(FEATURES)}")


def _default_cache(reference) -> StatsCache:
    if isinstance(reference, ShardReference):
        return StatsCache(reference.root.rstrip("/") + "/refstats")
    from distdiff.eval.inception_weights import cache_dir

    return StatsCache(cache_dir() / "refstats")


def _usable(hit: ReferenceStats | None, pr_count: int, want_modes: bool) -> bool:
    if hit is None:
        return False
    if pr_count and (hit.pr_features is None or hit.pr_features.shape[0] < pr_count):
        return False
    return not (want_modes and hit.mode_histogram is None)


def reference_statistics(rank: int, world_size: int, reduce_sum: ReduceSum, reference, extractor,
                         batch_size: int, pr_count: int, classifier=None, cache: StatsCache | None = None,
                         device: str | torch.device = "cpu", progress: bool = False):
    """Statistics of the reference images, from the cache or by the distributed path.

    Rank 0 looks the entry up and tells the others (through `reduce_sum`) whether to compute.

    Returns:
        (ReferenceStats or None on ranks other than 0, whether it came from the cache).
    """
    key = cache_key(reference.key, extractor.name, reference.image_shape)
    if classifier is not None:
        from distdiff.eval.features import state_digest

        key += f"-modes{state_digest(classifier)}"  # the mode histogram depends on the classifier too
    hit = cache.get(key) if (rank == 0 and cache is not None) else None
    usable = _usable(hit, pr_count, classifier is not None)
    if float(reduce_sum(torch.tensor([1.0 if usable else 0.0], dtype=torch.float64))[0]) > 0:
        if rank != 0:
            return None, True
        pr = hit.pr_features[:pr_count] if pr_count else None
        return ReferenceStats(hit.stats, pr, hit.mode_histogram, hit.num_images), True
    batches = ((idx, images, 0.0) for idx, images in reference.rank_batches(rank, world_size, batch_size))
    title = f"reference {reference.name} ({extractor.name})" if progress and rank == 0 else None
    acc = accumulate(batches, extractor, reference.image_shape, pr_count, 0, classifier, device, title,
                     _rank_count(reference.num_images, rank, world_size, batch_size)).all_reduced(reduce_sum)
    if acc.stats.count < 2:
        raise ReferenceDataError(f"reference {reference.name} yielded {acc.stats.count} image(s); FID needs at least 2")
    ref = ReferenceStats(acc.stats, acc.pr_features if pr_count else None, acc.modes, acc.stats.count)
    if rank == 0 and cache is not None:
        cache.put(key, ref)
    return (ref if rank == 0 else None), False


def _rank_count(num: int, rank: int, world_size: int, batch_size: int) -> int:
    """How many of `num` items rank `rank` handles (batch j goes to rank j mod world_size)."""
    return sum(len(r) for r in rank_batches_of(num, rank, world_size, batch_size))


def _say(settings: EvalSettings, rank: int, text: str) -> None:
    if settings.progress and rank == 0:
        print(f"[eval] {text}", flush=True)


def _source_row(source, acc, ref: ReferenceStats, extractor, settings: EvalSettings, pr_count: int) -> dict:
    """Rank 0: the metrics of one source from its reduced accumulator."""
    name = metric_key(extractor.metric_name)
    row = {
        "key": source.key, "label": source.label, "nfe": source.nfe, "num_samples": acc.stats.count,
        "parameters": getattr(source, "parameters", None), "model": getattr(source, "model_name", None),
        "sampler": getattr(source, "sampler_name", None),
        name: frechet_distance_from_stats(ref.stats, acc.stats),
        f"{name}_torchmetrics": frechet_distance_torchmetrics(ref.stats, acc.stats),
        "sec_per_image": float(acc.seconds[0]) / max(acc.stats.count, 1),
        "feature_sec_per_image": float(acc.seconds[1]) / max(acc.stats.count, 1),
        "precision": None, "recall": None, "modes": None, "reverse_kl": None,
    }
    if pr_count > settings.pr_k:
        # k-NN over pr_count^2 distances: run where the networks run (a GPU makes it seconds).
        device = torch.device(settings.device)
        row.update(precision_recall(ref.pr_features[:pr_count].to(device), acc.pr_features.to(device),
                                    settings.pr_k))
    if acc.modes is not None:
        coverage = mode_coverage(acc.modes)
        row.update(modes=coverage["modes"], num_modes=coverage["num_modes"], reverse_kl=coverage["reverse_kl"])
    return row


def _prepare(settings: EvalSettings, sources, extractor, reference, classifier):
    """Open whatever was not injected, and check that the pieces fit together."""
    checkpoint = None
    if sources is None:
        from distdiff.eval.checkpoint import EvalCheckpoint
        from distdiff.eval.sources import checkpoint_sources

        if not settings.checkpoint:
            raise ValueError("no checkpoint given: pass --checkpoint (a stage-2 export folder or s3:// prefix)")
        checkpoint = EvalCheckpoint(settings.checkpoint, settings.samplers)
        sources = checkpoint_sources(checkpoint, settings.device)
    image_shape = tuple(sources[0].image_shape)
    if classifier is None and settings.classifier:
        from distdiff.eval.classifier import load_classifier

        classifier, _ = load_classifier(settings.classifier)
    extractor = extractor or build_extractor(settings, image_shape, classifier)
    if reference is None:
        if not settings.reference:
            raise ValueError("no reference given: pass --reference (the training dataset's folder, s3:// prefix "
                             "or embedded name)")
        reference = open_reference(settings.reference)
    if tuple(reference.image_shape) != image_shape:
        raise ReferenceDataError(
            f"reference {reference.name} holds images of shape {tuple(reference.image_shape)}, "
            f"but the models generate {image_shape}: a mismatched reference")
    mode_classifier = classifier if num_digit_modes(image_shape) else None  # digit images: count modes
    return checkpoint, sources, extractor, reference, mode_classifier


def evaluate_worker(rank: int, world_size: int, reduce_sum: ReduceSum, settings: EvalSettings, *,
                    sources=None, extractor=None, reference=None, classifier=None) -> dict | None:
    """Evaluate every sample source; the result is independent of world_size.

    Args:
        rank, world_size: this worker and the number of workers.
        reduce_sum: element-wise sum over workers (`distdiff.eval.stats`).
        settings: what to evaluate.
        sources, extractor, reference, classifier: injected objects replacing what `settings`
            names (tests, custom feature networks).

    Returns:
        on rank 0 the results dict (also written to `settings.out` or `<checkpoint>/eval`);
        None on other ranks.
    """
    started = time.perf_counter()
    checkpoint, sources, extractor, reference, mode_classifier = _prepare(
        settings, sources, extractor, reference, classifier)
    pr_count = min(settings.pr_count, settings.num_samples, reference.num_images) if settings.pr_count else 0
    cache = StatsCache(settings.stats_cache) if settings.stats_cache else _default_cache(reference)
    phases = {"setup": time.perf_counter() - started}
    ref, cached = reference_statistics(rank, world_size, reduce_sum, reference, extractor, settings.batch_size,
                                       pr_count, mode_classifier, cache, settings.device, settings.progress)
    phases["reference"] = time.perf_counter() - started - phases["setup"]
    _say(settings, rank, f"reference statistics of {reference.name} ({reference.num_images} images): "
                         f"{'from the cache' if cached else 'computed'} in {phases['reference']:.0f} s")
    rows, grids = [], {}
    share = _rank_count(settings.num_samples, rank, world_size, settings.batch_size)
    for source in sources:
        phase_start = time.perf_counter()
        batches = generated_batches(source, settings.num_samples, rank, world_size, settings.batch_size,
                                    settings.seed)
        title = f"{source.key}: sample + features" if settings.progress and rank == 0 else None
        acc = accumulate(batches, extractor, source.image_shape, pr_count, settings.grid_count,
                         mode_classifier, settings.device, title, share).all_reduced(reduce_sum)
        phases[source.key] = time.perf_counter() - phase_start
        if rank == 0:
            rows.append(_source_row(source, acc, ref, extractor, settings, pr_count))
            _say(settings, rank, f"{source.label}: {acc.stats.count} samples in {phases[source.key]:.0f} s "
                                 f"(sampling {float(acc.seconds[0]):.0f} s, features {float(acc.seconds[1]):.0f} s, "
                                 f"summed over workers)")
            grids[source.key] = acc.grid_uint8()
    if rank != 0:
        return None
    results = _results(settings, checkpoint, extractor, reference, ref, cached, rows, world_size, pr_count)
    results["wall_seconds"] = time.perf_counter() - started
    results["phase_seconds"] = phases
    out = settings.out or (checkpoint.root.rstrip("/") + "/eval" if checkpoint is not None else None)
    if out:
        results["outputs"] = write_outputs(results, grids, out)
    return results


def _results(settings, checkpoint, extractor, reference, ref, cached, rows, world_size, pr_count) -> dict:
    ref_info = {"name": reference.name, "key": reference.key, "num_images": ref.num_images, "cached": cached,
                "modes": None, "reverse_kl": None}
    if ref.mode_histogram is not None:
        coverage = mode_coverage(ref.mode_histogram)
        ref_info.update(modes=coverage["modes"], num_modes=coverage["num_modes"], reverse_kl=coverage["reverse_kl"])
    return {
        "checkpoint": checkpoint.root if checkpoint is not None else settings.checkpoint,
        "metric": extractor.metric_name, "extractor": extractor.name, "reference": ref_info,
        "num_samples": settings.num_samples, "seed": settings.seed, "batch_size": settings.batch_size,
        "world_size": world_size, "device": settings.device, "pr_k": settings.pr_k, "pr_samples": pr_count,
        "models": rows, "settings": asdict(settings),
    }


def preflight(settings: EvalSettings) -> None:
    """Check the inputs before any worker starts: checkpoint, reference, feature weights.

    Raises:
        CheckpointError, ReferenceDataError, InceptionWeightsNotFound, FileNotFoundError, ValueError:
            one clear message naming what is wrong and where.
    """
    from distdiff.eval.checkpoint import EvalCheckpoint

    if not settings.checkpoint:
        raise ValueError("no checkpoint given: pass --checkpoint (a stage-2 export folder or s3:// prefix)")
    checkpoint = EvalCheckpoint(settings.checkpoint, settings.samplers)
    if not settings.reference:
        raise ValueError("no reference given: pass --reference (the training dataset's folder, s3:// prefix "
                         "or embedded name)")
    reference = open_reference(settings.reference)
    if tuple(reference.image_shape) != checkpoint.image_shape:
        raise ReferenceDataError(
            f"reference {reference.name} holds images of shape {tuple(reference.image_shape)}, "
            f"but {checkpoint.root} generates {checkpoint.image_shape}: a mismatched reference")
    if settings.features == "inception":
        from distdiff.eval.inception_weights import resolve_inception_weights

        resolve_inception_weights(settings.inception_weights, settings.allow_download)
    elif settings.features not in FEATURES:
        raise ValueError(f"unknown features {settings.features!r}; valid: {', '.join(FEATURES)}")
    if settings.classifier or settings.features == "fd-mnist":
        from distdiff.eval.classifier import load_classifier

        if not settings.classifier:
            raise ValueError("FD-MNIST features need the MNIST classifier: pass --classifier "
                             "(train one with `python launch/train_classifier.py --out PATH`)")
        load_classifier(settings.classifier)
