"""Switching a model's train / eval mode for a block of code, and back."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch.nn as nn


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the ``with`` block and restore its previous mode afterwards,
    however the block ends (probes measure in eval mode without changing the caller's model)."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
