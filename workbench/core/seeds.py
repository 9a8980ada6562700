"""The global random generators: saved into checkpoints for exact resume, and given back to the
calling process (a notebook kernel, a test) when a run ends."""
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
