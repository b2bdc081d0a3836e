"""A resumed run that grew: every rank draws its own noise, never a copy of another rank's."""

from __future__ import annotations

import torch

from distdiff.config import OptimConfig
from distdiff.train.checkpoint import COMPLETE_MARKER, TrainState, read_checkpoint, seed_fresh_streams, write_checkpoint
from distdiff.train.engines import EngineSet, TorchEngine


def _engines() -> EngineSet:
    torch.manual_seed(0)
    return EngineSet({"net": TorchEngine(torch.nn.Linear(3, 2), OptimConfig(lr=1e-3), "adamw")})


def _draws(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(4, generator=generator), torch.randn(4)  # the step's stream and torch's own


def test_ranks_added_on_resume_draw_fresh_distinct_noise(tmp_path):
    saved = torch.Generator().manual_seed(7)
    torch.manual_seed(7)
    write_checkpoint(tmp_path, _engines(), {}, TrainState(step=5, samples_seen=40), saved, rank=0)
    (tmp_path / COMPLETE_MARKER).write_text("")
    saved_draws = _draws(torch.Generator().set_state(saved.get_state()))

    draws = {}
    for rank in (0, 1, 2, 3):  # the run grew from 1 worker to 4
        generator = torch.Generator().manual_seed(123)
        state = read_checkpoint(tmp_path, _engines(), {}, generator, rank)
        assert state.step == 5 and state.rng_restored == (rank == 0)
        if not state.rng_restored:
            seed_fresh_streams(generator, seed=0, rank=rank, step=state.step)
        draws[rank] = _draws(generator)
    assert all(torch.equal(a, b) for a, b in zip(draws[0], saved_draws)), "rank 0 must continue its own streams"
    flat = [torch.cat(d) for d in draws.values()]
    assert all(not torch.equal(flat[i], flat[j]) for i in range(4) for j in range(i + 1, 4)), "two ranks share noise"

    again = torch.Generator()
    seed_fresh_streams(again, seed=0, rank=2, step=5)
    assert all(torch.equal(a, b) for a, b in zip(_draws(again), draws[2])), "fresh streams are reproducible"
    seed_fresh_streams(again, seed=0, rank=2, step=6)
    assert not torch.equal(_draws(again)[0], draws[2][0]), "the step enters the seed"
