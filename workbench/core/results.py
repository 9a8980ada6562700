"""Probe results as JSON-ready values: :func:`to_jsonable`, and :class:`AsDict`, which gives a
result dataclass its ``to_dict()``."""
from __future__ import annotations

from dataclasses import fields
from typing import Any, Mapping

import numpy as np
import torch


def to_jsonable(x: Any) -> Any:
    """Tensors / arrays / nested containers / results with a ``to_dict()`` -> JSON-ready Python
    values (lists, dicts with string keys, numbers, strings)."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().tolist()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, Mapping):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    if callable(getattr(x, "to_dict", None)):  # probe results, claims
        return to_jsonable(x.to_dict())
    return x


class AsDict:
    """Mixin for result dataclasses: ``to_dict()`` gives every field as JSON-ready values."""

    def to_dict(self) -> dict:
        return {f.name: to_jsonable(getattr(self, f.name)) for f in fields(self)}
