"""Hessian trace and spectral density of MAE / MFF-MAE ("beyond pyhessian", issue 16): the
model-level protocol. The estimators are generic and live in :mod:`workbench.linalg`:
:func:`~workbench.linalg.hessian_trace` (Hutchinson, with a t interval) and
:func:`~workbench.linalg.hessian_density` (stochastic Lanczos quadrature), both on
Hessian-vector products of a zero-argument loss, never forming the Hessian.

* :func:`mae_loss_fn` -- the MAE / MFF-MAE reconstruction loss over fixed batches with fixed
  seeded masks, as the zero-argument closure the estimators take;
* :func:`compare_curvature` -- trace and density of several models on the same batches, masks
  and probe seed.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch
import torch.nn as nn

from ..core.sizes import check_hessian_fits
from ..linalg import hessian_density, hessian_trace
from ..models.modes import eval_mode
from .hessian import batch_images, select_parameters


def mae_loss_fn(model: nn.Module, batches, seed: int = 0, mask_ratio: float | None = None,
                mask_strategy: str | None = None) -> Callable[[], torch.Tensor]:
    """A zero-argument closure: the mean reconstruction loss of ``model`` over ``batches``
    (image tensors [B, C, H, W], (images, labels) pairs, or one image tensor), batch ``i``
    masked with the fixed seed ``seed + i`` (the convention of ``hessian_spectrum``), so every
    call -- and every model given the same arguments -- sees the same masks. The model's mode is
    left as it is (call ``model.eval()`` for the protocol's eval mode)."""
    if isinstance(batches, torch.Tensor):
        batches = [batches]
    imgs = [batch_images(b) for b in batches]
    if not imgs:
        raise ValueError("batches must be image tensors [B, C, H, W] (or (images, labels) pairs)")
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    imgs = [x.to(device, dtype) for x in imgs]

    def loss_fn() -> torch.Tensor:
        total = sum(model(x, mask_ratio=mask_ratio, mask_strategy=mask_strategy,
                          seed=seed + i).loss for i, x in enumerate(imgs))
        return total / len(imgs)
    return loss_fn


def _count_images(batches) -> int:
    """Images over ``batches`` (as :func:`mae_loss_fn` reads them): its loss is one graph."""
    if isinstance(batches, torch.Tensor):
        batches = [batches]
    return sum(int(batch_images(b).shape[0]) for b in batches)


def compare_curvature(models: Mapping[str, nn.Module], batches, params: str | Sequence = "all",
                      seed: int = 0, trace: dict | None = None,
                      density: dict | None = None) -> dict[str, dict]:
    """Trace and density of several models (e.g. ``{"MAE": mae, "MFF-MAE": mff}``) on the same
    batches, masks (batch ``i`` masked with seed ``seed + i``) and probe seed ->
    ``{name: {"trace": TraceEstimate, "density": SpectralDensity}}``.

    ``params`` picks the parameters (``select_parameters``: ``"all"``, ``"encoder"``,
    ``"decoder"`` or name prefixes); ``trace`` / ``density`` are keyword arguments for
    :func:`~workbench.linalg.hessian_trace` / :func:`~workbench.linalg.hessian_density` (e.g.
    ``{"num_samples": 50}``). Each model builds its loss graph twice (once per estimator).
    Models run in eval mode (their modes are restored).
    """
    if not models:
        raise ValueError("no models given")
    images = _count_images(batches)
    for name, model in models.items():  # every model's graph (one over all batches), first
        check_hessian_fits(model, images, f"compare_curvature[{name!r}]")
    out = {}
    for name, model in models.items():
        with eval_mode(model):
            loss_fn = mae_loss_fn(model, batches, seed)
            chosen = select_parameters(model, params)
            out[name] = {"trace": hessian_trace(loss_fn, chosen, seed=seed, **(trace or {})),
                         "density": hessian_density(loss_fn, chosen, seed=seed,
                                                    **(density or {}))}
    return out
