"""pyhessian (Yao, Gholami, Keutzer & Mahoney 2020), the reference engine, run on the same
problem as ours: a zero-argument loss and the tensors to differentiate.

pyhessian reads ``model.parameters()`` and calls a criterion on a batch, so :class:`ParamHolder`
exposes exactly the chosen tensors as a module and the criterion ignores its inputs and calls
the loss. Its Hessian-vector products are counted by wrapping the function its power iteration
calls (:func:`count_pyhessian_hvps`, which patches ``pyhessian.hessian`` while it runs).
``top_hessian_eigenvalues(..., backend="pyhessian")`` lands in :func:`pyhessian_top_eigenvalues`.
"""
from __future__ import annotations

import contextlib
import sys
import time
import warnings
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn as nn

from ..linalg import HessianResult, as_param_list, math_attention, positive_int


class ParamHolder(nn.Module):
    """pyhessian reads ``model.parameters()``: expose exactly the chosen tensors (shared, not
    copied). ``forward`` returns a placeholder; the criterion computes the real loss."""

    def __init__(self, params: list[torch.Tensor]):
        super().__init__()
        self.held = nn.ParameterList([p if isinstance(p, nn.Parameter) else nn.Parameter(p)
                                      for p in params])

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return inputs


@contextlib.contextmanager
def count_pyhessian_hvps():
    """Count pyhessian's HVPs while the block runs: yields a box ``[count]``."""
    import pyhessian  # noqa: F401 - its package attribute `hessian` is the class, not the module

    ph = sys.modules["pyhessian.hessian"]
    original, box = ph.hessian_vector_product, [0]

    def counted(gradsH, params, v):
        box[0] += 1
        return original(gradsH, params, v)

    ph.hessian_vector_product = counted
    try:
        yield box
    finally:
        ph.hessian_vector_product = original


def pyhessian_top_eigenvalues(loss_fn: Callable[[], torch.Tensor], params: Iterable[torch.Tensor],
                              k: int = 1, tol: float = 1e-3, max_iter: int = 100,
                              seed: int = 0) -> HessianResult:
    """pyhessian's power iteration with deflation for the top ``k`` eigenvalues ->
    :class:`~workbench.linalg.HessianResult` (backend ``"pyhessian"``, largest magnitude first,
    no eigenvectors). ``tol``: its rule, the relative change between two power iterations;
    ``max_iter``: power iterations per eigenvalue. ``params`` must be ``nn.Parameter``s."""
    k = positive_int("k", k)
    params = as_param_list(params)
    if any(not isinstance(p, nn.Parameter) for p in params):
        raise ValueError("the pyhessian backend needs nn.Parameter tensors (it reads "
                         "model.parameters()); use backend='lanczos' for plain tensors")
    begin = time.perf_counter()
    eigs, count, n = _run_pyhessian(loss_fn, params, k, tol, max_iter, seed)
    order = np.argsort(-np.abs(eigs), kind="stable")
    values = torch.as_tensor(eigs[order], dtype=torch.float64)  # [k]
    return HessianResult(values, count, time.perf_counter() - begin, "pyhessian", n)


def _run_pyhessian(loss_fn, params: list[nn.Parameter], k: int, tol: float, max_iter: int,
                   seed: int) -> tuple[np.ndarray, int, int]:
    """(eigenvalues [k] as pyhessian orders them, HVPs, parameters with a live gradient)."""
    from pyhessian import hessian as PyHessian

    saved = [p.grad for p in params]
    for p in params:  # pyhessian accumulates the first gradient into .grad
        p.grad = None
    dummy = torch.zeros(1, device=params[0].device)
    try:
        with math_attention(), warnings.catch_warnings(), torch.random.fork_rng(devices=[]), \
                count_pyhessian_hvps() as count:
            warnings.filterwarnings("ignore", message=".*create_graph=True.*")
            torch.manual_seed(seed)
            h = PyHessian(ParamHolder(params), lambda outputs, targets: loss_fn(),
                          data=(dummy, dummy), cuda=params[0].is_cuda)
            # pyhessian breaks on parameters without a gradient (their entry is the float 0.)
            # and on constant gradients; their Hessian blocks are zero, so drop them
            keep = [i for i, g in enumerate(h.gradsH)
                    if isinstance(g, torch.Tensor) and g.requires_grad]
            h.params = [h.params[i] for i in keep]
            h.gradsH = [h.gradsH[i] for i in keep]
            n = sum(p.numel() for p in h.params)
            if not keep:
                return np.zeros(k), 0, n
            eigs, _ = h.eigenvalues(maxIter=max_iter, tol=tol, top_n=k)
            return np.asarray(eigs, dtype=np.float64), count[0], n
    finally:
        for p, g in zip(params, saved):  # drop the create_graph gradients (frees the graph)
            p.grad = g
