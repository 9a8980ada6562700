"""Filter-normalised loss-landscape slices (Li, Xu, Taylor, Studer & Goldstein, NeurIPS 2018,
"Visualizing the Loss Landscape of Neural Nets"; the plots Park & Kim, ICLR 2022, compare).

A random direction ``d`` (one Gaussian tensor per parameter) is rescaled filter by filter so that
each filter of ``d`` has the norm of the matching filter of the weights: for a weight tensor of
shape [out, ...] the filters are its ``out`` rows, ``d_i ← d_i · ‖w_i‖ / ‖d_i‖``. This removes
the scale invariance that makes plain random slices of differently-scaled networks
incomparable. One-dimensional parameters (biases, norm scales and shifts) are, as in the paper's
code, zeroed (``ignore="biasbn"``, the default) or set to the parameter itself
(``ignore=None``). The landscape is ``L(θ + α d₁)`` or ``L(θ + α d₁ + β d₂)`` on a grid.

Directions are drawn per parameter *name* from ``(seed, direction index, name)``, so two models
that share parameter names (MAE and MFF-MAE of one config) get the same raw draws for those
parameters, each then filter-normalised to its own weights (:func:`compare_landscapes`).
"""
from __future__ import annotations

import time
import zlib
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
import torch
import torch.nn as nn

from ..core.results import AsDict
from ..core.sizes import announce_cost, check_vectors_fit
from ..linalg import positive_int
from ..models.modes import eval_mode
from .curvature import mae_loss_fn

IGNORE = ("biasbn", None)


@dataclass
class LossLandscape(AsDict):
    alphas: np.ndarray  # [S] coefficients of direction 1
    betas: np.ndarray | None  # [S] coefficients of direction 2 (None for a 1-D slice)
    losses: np.ndarray  # [S] or [S, S] (losses[i, j] at alphas[i], betas[j])
    base_loss: float  # the loss at the weights themselves
    seed: int
    ignore: str | None

    @property
    def ndim(self) -> int:
        return 1 if self.betas is None else 2


def _trainable(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("the model has no trainable parameters")
    return named


def _draw(name: str, shape: torch.Size, seed: int, index: int) -> torch.Tensor:
    """Gaussian draw [shape] float64 fixed by (seed, direction index, parameter name)."""
    key = zlib.crc32(f"{int(seed)}/{int(index)}/{name}".encode())
    return torch.randn(shape, generator=torch.Generator().manual_seed(key), dtype=torch.float64)


def filter_normalize(direction: torch.Tensor, weight: torch.Tensor,
                     ignore: str | None = "biasbn") -> torch.Tensor:
    """Rescale ``direction`` filter by filter (rows along dim 0) to the norms of ``weight``'s
    filters; 1-D tensors are zeroed (``ignore="biasbn"``) or replaced by the weight (``None``)."""
    if ignore not in IGNORE:
        raise ValueError(f"ignore must be one of {IGNORE}, got {ignore!r}")
    if direction.shape != weight.shape:
        raise ValueError(f"direction {tuple(direction.shape)} and weight "
                         f"{tuple(weight.shape)} differ in shape")
    direction = direction.to(weight.device)
    w = weight.detach().to(direction.dtype)
    if w.dim() <= 1:
        return torch.zeros_like(direction) if ignore == "biasbn" else w.clone()
    d = direction.reshape(w.shape[0], -1)  # [out, fan_in]
    scale = w.reshape(w.shape[0], -1).norm(dim=1) / (d.norm(dim=1) + 1e-10)  # [out]
    return (d * scale[:, None]).reshape(w.shape)


def filter_normalized_direction(model: nn.Module, seed: int = 0, index: int = 0,
                                ignore: str | None = "biasbn") -> dict[str, torch.Tensor]:
    """One random filter-normalised direction: {parameter name: tensor in its dtype} over the
    model's trainable parameters (``index`` tells directions of one seed apart)."""
    return {n: filter_normalize(_draw(n, p.shape, seed, index), p, ignore).to(p.dtype)
            for n, p in _trainable(model)}


def _axis(span, steps: int) -> np.ndarray:
    lo, hi = (-float(span), float(span)) if np.ndim(span) == 0 else map(float, span)
    if not hi > lo:
        raise ValueError(f"span must be > 0 or an increasing (low, high) pair, got {span!r}")
    return np.linspace(lo, hi, steps)


@torch.no_grad()
def loss_landscape(model: nn.Module, loss_fn: Callable[[], torch.Tensor], directions: int = 1,
                   span: float | tuple[float, float] = 1.0, steps: int = 21, seed: int = 0,
                   ignore: str | None = "biasbn") -> LossLandscape:
    """``loss_fn()`` at ``θ + α d₁`` (``directions=1``) or ``θ + α d₁ + β d₂`` (``2``), with
    α, β on ``linspace(-span, span, steps)`` (or ``span=(low, high)``) and ``d`` random
    filter-normalised directions (:func:`filter_normalized_direction`, seeds ``seed``).

    ``loss_fn`` is a zero-argument callable evaluating ``model`` at its current weights (e.g.
    :func:`~workbench.probes.curvature.mae_loss_fn`, fixed masks). The weights are moved in
    place and restored bit for bit afterwards (also on error). Cost: ``steps`` (1-D) or
    ``steps²`` (2-D) forward passes, no gradients.
    """
    if directions not in (1, 2):
        raise ValueError(f"directions must be 1 or 2, got {directions!r}")
    steps = positive_int("steps", steps)
    axis = _axis(span, steps)  # [S]
    named = _trainable(model)
    first = named[0][1]
    check_vectors_fit(directions + 1, sum(p.numel() for _, p in named), first.element_size(),
                      first.device, f"loss_landscape(directions={directions}) directions and "
                      f"saved weights", "use one direction, or a smaller model")
    dirs = [filter_normalized_direction(model, seed, k, ignore) for k in range(directions)]
    saved = [p.detach().clone() for _, p in named]
    try:
        begin = time.perf_counter()
        base = float(loss_fn())
        announce_cost("loss_landscape", time.perf_counter() - begin, steps ** directions,
                      "more forward passes")
        losses = np.zeros((steps,) * directions)
        for idx in np.ndindex(*losses.shape):
            for (name, p), w in zip(named, saved):
                step = sum(float(axis[i]) * d[name] for i, d in zip(idx, dirs))
                p.copy_(w + step)
            losses[idx] = float(loss_fn())
    finally:
        for (_, p), w in zip(named, saved):
            p.copy_(w)
    return LossLandscape(axis, axis.copy() if directions == 2 else None, losses, base,
                         int(seed), ignore)


def compare_landscapes(models: Mapping[str, nn.Module], batches, directions: int = 1,
                       span: float | tuple[float, float] = 1.0, steps: int = 21, seed: int = 0,
                       ignore: str | None = "biasbn", mask_ratio: float | None = None,
                       mask_strategy: str | None = None) -> dict[str, LossLandscape]:
    """The same slice for several models (e.g. ``{"MAE": mae, "MFF-MAE": mff}``): the same
    batches and masks (batch ``i`` masked with seed ``seed + i``), the same raw direction draws
    for shared parameter names, each direction filter-normalised to its own model's weights.
    Models are evaluated in eval mode (their modes are restored)."""
    if not models:
        raise ValueError("no models given")
    out = {}
    for name, model in models.items():
        with eval_mode(model):
            loss_fn = mae_loss_fn(model, batches, seed, mask_ratio, mask_strategy)
            out[name] = loss_landscape(model, loss_fn, directions, span, steps, seed, ignore)
    return out
