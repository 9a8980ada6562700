"""Argument checks shared by the linear-algebra routines and the probes built on them: counts
that must be positive integers, and the parameter list a Hessian is taken with respect to."""
from __future__ import annotations

from typing import Iterable

import torch


def positive_int(name: str, value) -> int:
    """``value`` as an int, or a ValueError naming ``name`` (bools and non-integers refused)."""
    if isinstance(value, bool) or int(value) != value or int(value) < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def as_param_list(params: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    """The tensors of ``params`` as a list; refuses an empty one and tensors without grad."""
    params = [p for p in params]
    if not params:
        raise ValueError("no parameters given: the Hessian would be empty")
    bad = [i for i, p in enumerate(params) if not p.requires_grad]
    if bad:
        raise ValueError(f"parameters {bad} do not require grad; pass only trainable tensors")
    return params
