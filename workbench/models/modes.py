"""Switching a model's train / eval mode for a block of code, and back."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch.nn as nn


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the ``with`` block and give every submodule its own mode
    back afterwards, however the block ends (probes measure in eval mode without changing the
    caller's model). Only the submodules in training mode are touched: for a model in eval
    already it costs nothing (the slider calls it at every move)."""
    training = [m for m in model.modules() if m.training]
    for m in training:
        m.training = False
    try:
        yield model
    finally:
        for m in training:
            m.training = True
