"""Seeds and random generators: seeds derived from integers (:func:`derive_seed`, so that every
random choice of the data is a pure function of (run seed, step, sample, purpose): the same on any
number of ranks or workers, no global generator drawn from), and the global random generators,
saved into checkpoints for exact resume and given back to the calling process (a notebook
kernel, a test) when a run ends.

``derive_seed``'s last key says what a seed is for, so two uses never share a stream: 0 a
training sample's augmentation, 1 its mask, 2 an epoch's order (``data.StepBatches``),
3 ``data.augmented_batches``, 4 the view of plain indexing ``ds[i]`` (``data.views.PLAIN_VIEW``),
7 a shape item (``data.shapes``)."""
from __future__ import annotations

import contextlib
import random
from typing import Iterator

import numpy as np
import torch


def rng_state() -> dict:
    """Global RNG states in weights-only-loadable form (tensors, ints, lists)."""
    np_state = np.random.get_state()
    py = random.getstate()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python": [py[0], list(py[1]), py[2]],
            "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]),
                      float(np_state[4])]}


def set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    if s.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])
    random.setstate((s["python"][0], tuple(s["python"][1]), s["python"][2]))
    n = s["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))


def seed_everything(seed: int) -> None:
    """Seed torch, Python's ``random`` and NumPy's global generators."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """The global generators are as they were after the block, whatever it seeded or drew."""
    saved = rng_state()
    try:
        yield
    finally:
        set_rng_state(saved)


def derive_seed(*keys: int) -> int:
    """A 63-bit seed mixed from integers (splitmix64), e.g. ``(run seed, step, sample, purpose)``."""
    x = 0x9E3779B97F4A7C15
    for k in keys:
        x = (x ^ (int(k) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x = (x ^ (x >> 27)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & 0x7FFFFFFFFFFFFFFF
