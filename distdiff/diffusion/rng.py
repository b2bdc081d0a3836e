"""Random number helpers shared by every sampler and by the training losses.

A sampler may be handed one ``torch.Generator`` for the whole batch, or one generator per
sample. With one generator per sample, sample ``i``'s noise depends only on generator ``i``,
so a sample is the same whether it is drawn alone, in a batch of 8 or on another worker.
This is what makes distributed evaluation independent of the batch layout.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

GeneratorLike = Union[None, torch.Generator, Sequence[torch.Generator]]


def _is_generator_sequence(generator: GeneratorLike) -> bool:
    return generator is not None and not isinstance(generator, torch.Generator)


def _check_batch(generators: Sequence[torch.Generator], batch: int) -> None:
    if len(generators) != batch:
        raise ValueError(
            f"got {len(generators)} per-sample generators for a batch of {batch}; "
            "pass exactly one generator per sample"
        )


def randn(
    shape: Sequence[int],
    generator: GeneratorLike = None,
    device: Optional[Union[str, torch.device]] = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Standard normal noise drawn from ``generator``.

    Args:
        shape: output shape; ``shape[0]`` is the batch size B.
        generator: None (global RNG), one ``torch.Generator``, or a sequence of B generators,
            where generator i draws the noise of sample i (a tensor of shape ``shape[1:]``).
        device: device of the result. Noise is drawn on each generator's own device and then
            moved, so a CPU generator gives the same numbers whatever ``device`` is.
            Defaults to the generator's device (or CPU).
        dtype: floating dtype of the result.

    Returns:
        Tensor of ``shape`` with i.i.d. N(0, 1) entries.
    """
    shape = tuple(int(s) for s in shape)
    if generator is None:
        return torch.randn(shape, device=device, dtype=dtype)
    if isinstance(generator, torch.Generator):
        out = torch.randn(shape, generator=generator, device=generator.device, dtype=dtype)
        return out if device is None else out.to(device)
    _check_batch(generator, shape[0])
    rows = [torch.randn(shape[1:], generator=g, device=g.device, dtype=dtype) for g in generator]
    out = torch.stack([r.to(rows[0].device) for r in rows])  # (B, *shape[1:])
    return out if device is None else out.to(device)


def randint(
    high: int,
    batch: int,
    generator: GeneratorLike = None,
    device: Optional[Union[str, torch.device]] = None,
) -> torch.Tensor:
    """Integers uniform in [0, high), one per sample, drawn from ``generator``.

    Args:
        high: exclusive upper bound (e.g. the number of diffusion steps T).
        batch: number of samples B.
        generator: None, one ``torch.Generator`` or a sequence of B generators (see ``randn``).
        device: device of the result.

    Returns:
        int64 tensor of shape (B,).
    """
    if generator is None:
        return torch.randint(0, high, (batch,), device=device, dtype=torch.int64)
    if isinstance(generator, torch.Generator):
        out = torch.randint(0, high, (batch,), generator=generator, device=generator.device)
        return out if device is None else out.to(device)
    _check_batch(generator, batch)
    vals = [torch.randint(0, high, (1,), generator=g, device=g.device).cpu() for g in generator]
    out = torch.cat(vals)  # (B,)
    return out if device is None else out.to(device)


def per_sample_generators(seeds: Sequence[int], device: Union[str, torch.device] = "cpu") -> list:
    """One seeded ``torch.Generator`` per sample, e.g. seeded by each sample's global index.

    Args:
        seeds: one integer seed per sample.
        device: device of the generators.

    Returns:
        List of ``torch.Generator``, usable as the ``generator`` argument of ``randn``.
    """
    gens = []
    for seed in seeds:
        g = torch.Generator(device=device)
        g.manual_seed(int(seed))
        gens.append(g)
    return gens
