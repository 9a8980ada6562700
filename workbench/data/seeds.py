"""Seeds derived from integers, so that every random choice of the data is a pure function of
(run seed, step, sample, purpose): the same on any number of ranks or workers, and no global
generator is drawn from.

The last key says what a derived seed is for, so two uses never share a stream: 0 a training
sample's augmentation, 1 its mask, 2 an epoch's order (:class:`~workbench.data.StepBatches`),
3 :func:`~workbench.data.augmented_batches`, 4 the view of plain indexing ``ds[i]``
(:data:`PLAIN_VIEW`), 7 a shape item (:mod:`workbench.data.shapes`).
"""
from __future__ import annotations

PLAIN_VIEW = 4  # purpose of the augmentation seed of plain indexing, ds[i]


def derive_seed(*keys: int) -> int:
    """A 63-bit seed mixed from integers (splitmix64), e.g. ``(run seed, step, sample, purpose)``."""
    x = 0x9E3779B97F4A7C15
    for k in keys:
        x = (x ^ (int(k) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x = (x ^ (x >> 27)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & 0x7FFFFFFFFFFFFFFF
