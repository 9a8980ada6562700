"""Argument checks shared by the linear-algebra routines and the probes built on them: counts
that must be positive integers, and the parameter list a Hessian is taken with respect to."""
from __future__ import annotations

import warnings
from typing import Iterable

import torch


def positive_int(name: str, value) -> int:
    """``value`` as an int, or a ValueError naming ``name`` (bools and non-integers refused)."""
    if isinstance(value, bool) or int(value) != value or int(value) < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def as_param_list(params: Iterable[torch.Tensor] | Iterable[tuple[str, torch.Tensor]]
                  ) -> list[torch.Tensor]:
    """The tensors a Hessian is taken over, from ``model.parameters()``, ``named_parameters()``
    or any list of either. Tensors without ``requires_grad`` (frozen ones) are left out with a
    warning that names them; none left, or none given, is a ValueError."""
    items = list(params)
    if not items:
        raise ValueError("no parameters given: the Hessian would be empty")
    named = [(str(p[0]), p[1]) if isinstance(p, tuple) else (f"#{i}", p)
             for i, p in enumerate(items)]
    for name, p in named:
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"parameter {name} is a {type(p).__name__}, not a tensor: pass "
                            f"model.parameters(), model.named_parameters() or a list of tensors")
    frozen = [name for name, p in named if not p.requires_grad]
    kept = [p for _, p in named if p.requires_grad]
    if not kept:
        raise ValueError(f"none of the {len(named)} parameters requires grad (all frozen): "
                         f"unfreeze some or pass trainable ones (probes.select_parameters)")
    if frozen:
        shown = ", ".join(frozen[:8]) + (f" and {len(frozen) - 8} more" if len(frozen) > 8 else "")
        warnings.warn(f"left out {len(frozen)} frozen parameter(s) (requires_grad False): {shown}",
                      stacklevel=3)
    return kept
