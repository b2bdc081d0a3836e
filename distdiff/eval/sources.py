"""Sample sources: what the evaluator draws images from, one seed per global sample index.

A source has `key` (short, file-name safe), `label` (the table's model column), `nfe` (network
evaluations per sample of the denoiser, the VAE decode not counted), `parameters` (of the sampling
network, or None), `image_shape` (C, H, W) and
`generate(indices, seeds) -> (B, C, H, W) in [-1, 1]`, where sample `indices[j]` must depend only
on `seeds[j]` (per-sample generators), never on the batch it was drawn in, and optionally
`warm_up(batch_size)`, called once before the timed batches. Tests plug in synthetic sources with the
same members.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import torch


class SampleSource(Protocol):
    key: str
    label: str
    nfe: int
    parameters: int | None
    image_shape: tuple[int, int, int]

    def generate(self, indices: Sequence[int], seeds: Sequence[int]) -> torch.Tensor:  # (B, C, H, W)
        ...


_SEED_STRIDE = 0x9E3779B1  # odd, ~2^32 / golden ratio: spreads base seeds far apart


def sample_seed(base_seed: int, index: int) -> int:
    """The seed of global sample `index` under `base_seed`.

    torch's CPU generator (mt19937) uses only the low 32 bits of a seed, so seeds are kept in
    [0, 2^32): for one base seed, distinct indices below 2^32 get distinct seeds, and different
    base seeds start their index runs ~2.6e9 apart.
    """
    return (index + base_seed * _SEED_STRIDE) % (1 << 32)


class ModelSource:
    """One model of an export under one sampler (see `distdiff.tasks.SAMPLERS`).

    Args:
        sampler: a `distdiff.tasks.Stage2Sampler` holding the model.
        model: its `ModelSpec`.
        settings: the `SamplerSpec` to draw with.
        image_shape: (C, H, W) of the decoded images.
    """

    def __init__(self, sampler, model, settings, image_shape):
        from distdiff.tasks import sampler_key, sampler_label, sampler_nfe

        self.sampler, self.model, self.settings = sampler, model, settings
        self.image_shape = tuple(image_shape)
        self.nfe = sampler_nfe(model, settings)
        self.key, self.label = sampler_key(model, settings), sampler_label(model, settings)
        self.parameters = model.parameters
        self.model_name, self.sampler_name = model.name, settings.name

    def warm_up(self, batch_size: int) -> None:
        """Prepare the kernels for batches of this size (see `Stage2Sampler.warm_up`), untimed."""
        self.sampler.warm_up(self.model, batch_size)

    def generate(self, indices: Sequence[int], seeds: Sequence[int]) -> torch.Tensor:
        # Class-conditional models: balanced labels that are a function of the index alone.
        return self.sampler.sample(self.model, self.settings, seeds, self.sampler.class_labels(indices))


def checkpoint_sources(checkpoint, device: str | torch.device = "cpu") -> list:
    """The sample sources of an `EvalCheckpoint`: its selected (model, sampler) pairs, in order.

    Args:
        checkpoint: an opened `distdiff.eval.checkpoint.EvalCheckpoint`.
        device: where the networks run.
    """
    sampler = checkpoint.build_sampler(device)
    return [ModelSource(sampler, model, settings, checkpoint.image_shape) for model, settings in checkpoint.selection]
