"""The resumable stream of segmentation training tiles, one independent random stream per rank."""

from __future__ import annotations

import numpy as np
import torch

from distdiff.data.seg_canvas import TileSampler


class SegTileStream:
    """Endless batches of random tiles: `image` (B, 1, T, T) in [-1, 1], `mask` (B, T, T) int64 and,
    with weight maps, `weight` (B, T, T).

    Batch n of rank r is drawn from the seed (seed, r, n), so a resumed run continues exactly and a
    run resumed on more workers gives each new rank its own tiles.

    Args:
        sampler: the canvases' tile sampler.
        batch_size: tiles per batch on this rank.
        rank: this worker's rank.
        seed: the run's seed.
    """

    def __init__(self, sampler: TileSampler, batch_size: int, rank: int, seed: int):
        self.sampler, self.batch_size, self.rank, self.seed = sampler, batch_size, rank, seed
        self.drawn = 0

    def __iter__(self):
        while True:
            raw = self.sampler.sample(self.batch_size, np.random.default_rng([self.seed, self.rank, self.drawn]))
            self.drawn += 1
            batch = {"image": torch.from_numpy(raw["image"]).float() / 127.5 - 1.0,
                     "mask": torch.from_numpy(raw["mask"])}
            if "weight" in raw:
                batch["weight"] = torch.from_numpy(raw["weight"])
            yield batch

    def state_dict(self) -> dict:
        return {"drawn": self.drawn}

    def load_rank_states(self, states: list[dict] | None) -> None:
        """Continue after the batches the saved ranks drew (the most any of them drew)."""
        if states:
            self.drawn = max(int(state.get("drawn", 0)) for state in states)
