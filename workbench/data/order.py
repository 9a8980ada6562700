"""The training order as a pure function of (seed, step)."""
from __future__ import annotations

import torch

from ..core.seeds import derive_seed


class StepBatches:
    """The training order as a pure function of (seed, step): the global batch of step ``s`` is
    positions ``s * B .. s * B + B - 1`` of an endless stream made of one seeded permutation of the
    dataset per epoch. Sample ``k`` of the global batch augments with seed
    ``derive_seed(seed, s, k, 0)`` and masks with ``derive_seed(seed, s, k, 1)``.

    Each step is ``accum`` micro-batches; each micro-batch is split evenly over ``world`` ranks.
    Iterating yields this rank's micro-batches of ``(index, augment_seed)`` keys from
    ``start_step`` on, so a resumed run sees exactly the data it would have seen.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int = 0, accum: int = 1,
                 rank: int = 0, world: int = 1, start_step: int = 0, steps: int | None = None):
        if batch_size % (accum * world):
            raise ValueError(f"global batch {batch_size} is not divisible by accum_steps "
                             f"{accum} x ranks {world}")
        self.n, self.batch, self.seed = num_items, batch_size, seed
        self.accum, self.rank, self.world = accum, rank, world
        self.start, self.steps = start_step, steps
        self.local = batch_size // (accum * world)  # per rank and micro-batch
        self._perms: dict[int, list[int]] = {}

    def permutation(self, epoch: int) -> list[int]:
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(derive_seed(self.seed, epoch, 2))
            self._perms = {epoch: torch.randperm(self.n, generator=g).tolist()}  # keep one epoch
        return self._perms[epoch]

    def positions(self, step: int, micro: int) -> list[int]:
        """Global-batch positions k of this rank's part of micro-batch ``micro`` of ``step``."""
        first = micro * self.batch // self.accum + self.rank * self.local
        return list(range(first, first + self.local))

    def keys(self, step: int, micro: int) -> list[tuple[int, int]]:
        out = []
        for k in self.positions(step, micro):
            p = step * self.batch + k
            out.append((self.permutation(p // self.n)[p % self.n], derive_seed(self.seed, step, k, 0)))
        return out

    def mask_seeds(self, step: int, micro: int) -> list[int]:
        return [derive_seed(self.seed, step, k, 1) for k in self.positions(step, micro)]

    def __iter__(self):
        step = self.start
        while self.steps is None or step < self.steps:
            for micro in range(self.accum):
                yield self.keys(step, micro)
            step += 1

    def __len__(self) -> int:
        return 0 if self.steps is None else max(0, self.steps - self.start) * self.accum
