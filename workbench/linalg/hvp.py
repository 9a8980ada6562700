"""Hessian-vector products (HVPs) of a scalar loss by double backward.

:class:`HVPOperator` computes the loss and its first gradient (with ``create_graph=True``) once;
every product is then one more backward through that retained graph, ``Hv = d(g . v)/dθ``.
Vectors are flat: the parameters' elements concatenated in the order given.
:class:`AnnouncedHVPOperator` also says what a long run will cost after timing its first product.

Fused scaled-dot-product-attention kernels have no double backward on CPU, so the loss, its
gradient and every HVP run under :func:`math_attention`: callers never switch attention
implementations themselves.
"""
from __future__ import annotations

import contextlib
import time
from typing import Callable

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..core.sizes import announce_cost


def math_attention() -> contextlib.AbstractContextManager:
    """Force the plain (math) SDPA implementation, which supports double backward."""
    return sdpa_kernel(SDPBackend.MATH)


class HVPOperator:
    """``v ↦ H v`` for flat vectors, reusing one retained graph of the first gradient.

    ``batched(V)`` applies H to the rows of ``V`` [b, n] in one vmapped backward
    (``is_grads_batched``); on CPU that is *not* cheaper per product than ``b`` single calls
    (measured on the tiny MAE: 0.43 s single, 0.51-0.72 s per product batched), so the Lanczos
    engine uses single products; it is kept for accelerators and for tests.
    """

    def __init__(self, loss_fn: Callable[[], torch.Tensor], params: list[torch.Tensor]):
        self.params = params
        self.numel = sum(p.numel() for p in params)
        self.count = 0  # products so far (the unit of cost)
        with math_attention():
            loss = loss_fn()
            if not (isinstance(loss, torch.Tensor) and loss.numel() == 1):
                raise ValueError("loss_fn must return a scalar tensor")
            grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
        # pairs (first gradient, index) that depend on the parameters; the others have zero
        # Hessian blocks (no gradient at all, or a gradient that is a constant)
        self.live = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
        self.grads = [grads[i] for i in self.live]
        self.gradient = torch.cat([(torch.zeros_like(p) if g is None else g.detach()).reshape(-1)
                                   for p, g in zip(params, grads)])  # [n] flat first gradient

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        """flat [n] -> flat [n], in the parameters' dtype."""
        self.count += 1
        if not self.grads:  # the loss is at most linear in params: H = 0
            return torch.zeros_like(v, dtype=self.params[0].dtype)
        chunks = self._split(v)
        with math_attention():
            hv = torch.autograd.grad(self.grads, self.params,
                                     grad_outputs=[chunks[i] for i in self.live],
                                     retain_graph=True, allow_unused=True)
        return torch.cat([(torch.zeros_like(p) if h is None else h).reshape(-1)
                          for p, h in zip(self.params, hv)])

    def batched(self, vs: torch.Tensor) -> torch.Tensor:
        """[b, n] -> [b, n]: ``b`` HVPs in one vmapped backward."""
        b = vs.shape[0]
        self.count += b
        if not self.grads:
            return torch.zeros_like(vs, dtype=self.params[0].dtype)
        chunks = self._split(vs, batch=b)
        with math_attention():
            hv = torch.autograd.grad(self.grads, self.params,
                                     grad_outputs=[chunks[i] for i in self.live],
                                     retain_graph=True, allow_unused=True, is_grads_batched=True)
        return torch.cat([(torch.zeros(b, *p.shape, dtype=p.dtype, device=p.device) if h is None
                           else h).reshape(b, -1) for p, h in zip(self.params, hv)], dim=1)

    def _split(self, v: torch.Tensor, batch: int | None = None) -> list[torch.Tensor]:
        """flat [n] (or [b, n]) -> one tensor per parameter, shaped like it ([b, *shape])."""
        out, i = [], 0
        for p in self.params:
            piece = v[..., i:i + p.numel()]
            shape = p.shape if batch is None else (batch, *p.shape)
            out.append(piece.reshape(shape).to(p.dtype))
            i += p.numel()
        return out


class AnnouncedHVPOperator(HVPOperator):
    """An :class:`HVPOperator` that times its first product -- the run's own, no extra work --
    and, when the ``planned`` products at that pace take more than a minute, prints what the
    run will cost before going on (:func:`workbench.core.sizes.announce_cost`); tiny runs stay
    quiet."""

    def __init__(self, loss_fn: Callable[[], torch.Tensor], params: list[torch.Tensor],
                 what: str, planned: int):
        super().__init__(loss_fn, params)
        self.what, self.planned = what, planned

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        if self.planned is None:
            return super().__call__(v)
        begin = time.perf_counter()
        out = super().__call__(v)
        if out.is_cuda:
            torch.cuda.synchronize(out.device)
        announce_cost(self.what, time.perf_counter() - begin, self.planned - 1,
                      "more Hessian-vector products")
        self.planned = None
        return out
