"""The exact dense Hessian, the oracle the Lanczos engine, the trace and the density are checked
against (tests, ``bench/hessian_exact.py``). Memory ``n²``: for small parameter sets only."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn as nn

from .hvp import math_attention


def exact_hessian(model: nn.Module, names: Sequence[str],
                  loss_of: Callable[[Callable[..., object]], torch.Tensor]) -> torch.Tensor:
    """The dense Hessian [n, n] of a loss w.r.t. the named parameters of ``model`` (flattened in
    the given order), by ``torch.autograd.functional.hessian`` under math attention, symmetrised.

    ``loss_of(call)`` returns the scalar loss, calling the model as ``call(*args, **kwargs)``
    (the model with the named parameters substituted), e.g.
    ``exact_hessian(model, names, lambda call: call(imgs, seed=0).loss)``.
    """
    named = dict(model.named_parameters())
    missing = [n for n in names if n not in named]
    if missing or not names:
        raise ValueError(f"no such parameters {missing} (or none named); the model has "
                         f"{sorted(named)[:8]} ...")
    shapes = [named[n].shape for n in names]

    def loss_of_flat(flat: torch.Tensor) -> torch.Tensor:  # [n] -> scalar
        chunks = dict(zip(names, (c.view(s) for c, s in
                                  zip(flat.split([s.numel() for s in shapes]), shapes))))
        return loss_of(lambda *a, **k: torch.func.functional_call(model, chunks, a, k,
                                                                  strict=False))

    flat0 = torch.cat([named[n].detach().reshape(-1) for n in names])  # [n]
    with math_attention():
        h = torch.autograd.functional.hessian(loss_of_flat, flat0)  # [n, n]
    return 0.5 * (h + h.T)
