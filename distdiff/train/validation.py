"""Cross-checks of a RunConfig against the model registry and the data, done before any work starts."""

from __future__ import annotations

from pathlib import Path

from distdiff.config import ConfigError, RunConfig
from distdiff.data.embedded import embedded_dataset
from distdiff.models import preset_downsampling
from distdiff.models.export import weight_paths
from distdiff.train.data_source import describe_source


def _downsampling(family: str, name: str, key: str) -> int:
    """The preset's downsampling factor; an unknown preset is a config error naming the key."""
    try:
        return preset_downsampling(family, name)
    except ValueError as err:
        raise ConfigError(f"{key}: {err}") from None


def _check_given_vae(checkpoint: str | None) -> None:
    """A local `vae.checkpoint` must name a VAE export: its stem or either of its two files, as
    `load_weights` reads them (`weight_paths`)."""
    if not checkpoint or "://" in checkpoint:
        return
    missing = [str(p) for p in weight_paths(Path(checkpoint).expanduser()) if not p.is_file()]
    if missing:
        raise ConfigError(f"vae.checkpoint={checkpoint}: no VAE export there ({' and '.join(missing)} missing); "
                          "give the stem stage 1 printed, e.g. runs/NAME/vae/export/vae")


def _check_accumulation(cfg: RunConfig, stage: str) -> None:
    """Checkpoints must fall on optimizer steps, or a resume would lose a partly accumulated gradient."""
    accumulation = cfg.distributed.gradient_accumulation_steps
    if accumulation < 1:
        raise ConfigError(f"distributed.gradient_accumulation_steps must be >= 1, got {accumulation}")
    stages = {"vae": ["stage1"], "ldm": ["stage2"], "seg": ["stage_seg"], "all": ["stage1", "stage2"]}[stage]
    for key in stages:
        stage_cfg = getattr(cfg, key)
        for name in ("steps", "checkpoint_every"):
            if getattr(stage_cfg, name) % accumulation:
                raise ConfigError(f"{key}.{name}={getattr(stage_cfg, name)} is not a multiple of "
                                  f"distributed.gradient_accumulation_steps={accumulation}: checkpoints must "
                                  "fall on optimizer steps")


def _seg_shard_sides(cfg: RunConfig) -> int:
    """The smallest image side of the run's segmentation shards, after checking that both sets are
    segmentation shards with the same channels and classes (read from their manifests only)."""
    from distdiff.data.errors import DataError
    from distdiff.data.seg_shards import read_seg_manifest

    metas = {}
    for key, source in (("seg.data", cfg.seg.data), ("seg.test_data", cfg.seg.test_data)):
        try:
            metas[key] = read_seg_manifest(source).meta
        except DataError as err:
            raise ConfigError(f"{key}: {err}") from None
    train, test = metas["seg.data"], metas["seg.test_data"]
    for field in ("channels", "num_classes"):
        if train.get(field) != test.get(field):
            raise ConfigError(f"seg.data has {field} {train.get(field)} but seg.test_data {test.get(field)}")
    return min(train["height"], train["width"])


def _check_seg(cfg: RunConfig) -> None:
    """The segmentation preset exists and a training tile's output (rounded up to a valid one) fits every
    training image."""
    from distdiff.models import preset_kwargs
    from distdiff.models.seg_unet import input_size_for, margin

    try:
        depth = preset_kwargs("seg_unet", cfg.seg.preset)["depth"]
    except ValueError as err:
        raise ConfigError(f"seg.preset: {err}") from None
    output = input_size_for(cfg.seg.tile_output, depth) - 2 * margin(depth)
    if cfg.seg.data is not None:
        smallest = _seg_shard_sides(cfg)
        if output > smallest:
            raise ConfigError(f"seg.tile_output {cfg.seg.tile_output} (a valid output of {output}) does not fit the "
                              f"smallest image side of seg.data ({smallest}); lower seg.tile_output")
    elif output > cfg.seg.canvas_side:
        raise ConfigError(f"seg.tile_output {cfg.seg.tile_output} (a valid output of {output}) does not fit "
                          f"seg.canvas_side {cfg.seg.canvas_side}")


def validate_run(cfg: RunConfig, stage: str = "all") -> None:
    """Raise ConfigError when presets are unknown or sizes do not fit the networks.

    Args:
        cfg: the resolved run config.
        stage: "vae", "ldm", "seg" or "all": which stages will run.
    """
    _check_accumulation(cfg, stage)
    if stage == "seg":
        _check_seg(cfg)
        return
    info = describe_source(cfg.data)
    c, h, w = info.image_shape
    if stage in ("ldm", "all") and cfg.ldm.enabled and cfg.ldm.text.enabled and not info.captions:
        raise ConfigError(f"ldm.text.enabled, but {cfg.data.source} has no captions (its manifest lists none: "
                          "shards without txt members); write the shards again with captions, or turn it off")
    f = _downsampling("vae", cfg.vae.preset, "vae.preset")
    if stage in ("vae", "all") and (h % f or w % f):
        raise ConfigError(f"vae.preset '{cfg.vae.preset}' downsamples by {f}, which does not divide the "
                          f"{h}x{w} images of {cfg.data.source}")
    if stage == "vae":
        return
    if cfg.space == "latent":
        _check_given_vae(cfg.vae.checkpoint)
    size = (h // f, w // f) if cfg.space == "latent" else (h, w)
    nets = []
    if cfg.ldm.enabled:
        nets.append(("unet", cfg.ldm.preset, "ldm.preset"))
    if cfg.ddgan.enabled:
        nets.append(("ddgan_generator", cfg.ddgan.preset, "ddgan.preset"))
    for family, name, key in nets:
        down = _downsampling(family, name, key)
        if size[0] % down or size[1] % down:
            raise ConfigError(
                f"{key} '{name}' downsamples by {down}, which does not divide the {size[0]}x{size[1]} "
                f"{'latents' if cfg.space == 'latent' else 'images'} it would train on"
            )
    if cfg.data.is_embedded:
        data_size = embedded_dataset(cfg.data.source).size(cfg.data.stacked_size)
        for stage_cfg, key in ((cfg.stage1, "stage1"), (cfg.stage2, "stage2")):
            if stage_cfg.batch_size * cfg.distributed.num_workers > data_size:
                raise ConfigError(f"{key}.batch_size x distributed.num_workers exceeds the {data_size} samples")
