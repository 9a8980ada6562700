"""The top-k Hessian eigenvalues of a loss: thick-restart block Lanczos on Hessian-vector products.

Semantics (Park & Kim, ICLR 2022): the "top-k eigenvalues" are the k eigenvalues of largest
*magnitude* -- what power iteration finds -- with their signs kept, sorted by descending
magnitude. A saddle's large negative curvature therefore appears as a negative entry.

Engine: :class:`~workbench.linalg.hvp.HVPOperator` drives :class:`~workbench.linalg.lanczos.Lanczos`
(block ``b = min(k, 3)`` by default, applied one HVP at a time, full reorthogonalisation, basis
in the parameters' dtype), which needs far fewer products than power iteration with deflation:

* start vector: the first gradient (free: it is already computed) plus a random vector. A
  network's gradient lies mostly in the top Hessian eigenspace, so the top eigenvalue is
  typically accurate to 1e-3 after ~3 HVPs instead of ~6-9 from a random start;
* stopping rule: every wanted Ritz pair has relative residual ``‖Hy − θy‖ ≤ tol·|θ|`` (read off
  the recurrence, no extra products). That guarantees each returned θ lies within ``tol·|θ|`` of
  *some* eigenvalue of H -- not that the k returned values are the k largest: a Krylov method can
  miss an eigenvalue its space has not yet resolved (a tight cluster) or cannot hold (an
  eigenvalue repeated more than ``b`` times). The block start resolves clusters and
  multiplicities up to ``b`` in practice (tested against exact spectra); k=1 stays single-vector.

Batched HVPs (``HVPOperator.batched``) were measured slower per product than single ones on
CPU, so the engine uses single products. Below :data:`DENSE_LIMIT` parameters the Hessian is
built densely (one HVP per column) and diagonalised instead.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import torch

from ..core.sizes import check_vectors_fit
from .checks import as_param_list, positive_int
from .hvp import HVPOperator
from .lanczos import Lanczos

# Below this many parameters the Hessian is built densely (one HVP per column) and diagonalised:
# exact, and ARPACK needs k < n anyway.
DENSE_LIMIT = 64


@dataclass
class HessianResult:
    eigenvalues: torch.Tensor  # [k] float64, largest magnitude first, signs kept
    num_hvps: int  # Hessian-vector products used (the unit of cost)
    seconds: float  # wall time, including the forward and first backward
    backend: str
    num_params: int  # dimension of the Hessian (parameters that get a gradient count)
    eigenvectors: torch.Tensor | None = None  # [k, n] unit vectors, same order (lanczos only)

    def to_dict(self, eigenvectors: bool = False) -> dict:
        """JSON-ready values; the eigenvectors ([k, n], as large as the model) only on request."""
        d = {"eigenvalues": self.eigenvalues.tolist(), "num_hvps": int(self.num_hvps),
             "seconds": float(self.seconds), "backend": self.backend,
             "num_params": int(self.num_params)}
        if eigenvectors:
            d["eigenvectors"] = None if self.eigenvectors is None else self.eigenvectors.tolist()
        return d


def warn_below_resolution(tol: float, dtype: torch.dtype) -> None:
    """Residuals of HVPs in ``dtype`` stall near ~10 eps on large models (float32: ~1e-6): a
    smaller ``tol`` is never reached and the run lasts until ``max_iter``."""
    floor = 10 * torch.finfo(dtype).eps
    if tol < floor:
        warnings.warn(f"tol {tol:g} is below what {dtype} Hessian-vector products resolve "
                      f"(~{floor:.0e}): on large models the residuals stall near that floor and "
                      f"the run lasts until max_iter; use float64 parameters or a larger tol",
                      RuntimeWarning)


def lanczos_sizes(k: int, n: int, ncv: int | None, block: int | None) -> tuple[int, int]:
    """(block size, basis size) of the block Lanczos for the top ``k`` of ``n`` parameters:
    ``block = min(k, 3)`` and ``ncv = max(2k + 1, 20)`` unless given, the basis at least
    ``k + 2 block`` and at most ``n``. The basis holds ``ncv + block + 1`` vectors."""
    block = min(k, 3) if block is None else int(block)
    ncv = max(2 * k + 1, 20) if ncv is None else int(ncv)
    return block, min(max(ncv, k + 2 * block), n)


def check_lanczos_fits(params: list[torch.Tensor], k: int, ncv: int | None, block: int | None,
                       dtype: torch.dtype | None) -> None:
    """Refuse a Lanczos basis (``ncv + block + 1`` vectors of every parameter) that cannot fit
    where the parameters are, before the loss is computed."""
    n = sum(p.numel() for p in params)
    block, ncv = lanczos_sizes(k, n, ncv, block)
    check_vectors_fit(ncv + block + 1, n, (dtype or params[0].dtype).itemsize,
                      params[0].device, f"top_hessian_eigenvalues(k={k}) Lanczos basis",
                      "lower k or ncv, or pick a parameter subset (select_parameters)")


def top_eigenpairs(loss_fn: Callable[[], torch.Tensor], params: Iterable[torch.Tensor],
                   k: int = 1, tol: float = 1e-3, max_iter: int = 100,
                   dtype: torch.dtype | None = None, seed: int = 0, ncv: int | None = None,
                   start="auto", block: int | None = None) -> HessianResult:
    """The ``k`` eigenpairs of largest magnitude of the Hessian of ``loss_fn()`` w.r.t.
    ``params`` by thick-restart block Lanczos -> :class:`HessianResult` (backend ``"lanczos"``).

    Args:
        loss_fn: a callable returning a scalar loss; called once, under math attention.
        params: tensors with ``requires_grad``; ones the loss does not depend on only add zero
            eigenvalues.
        tol: stop once every one of the ``k`` wanted Ritz pairs ``(θ, y)`` has a relative
            residual ``‖Hy − θy‖ ≤ tol·|θ|``. Guaranteed (up to the HVPs' rounding, float32:
            ~1e-6): each returned θ has an eigenvalue of H within ``tol·|θ|`` (within
            ``(tol·θ)²/gap`` if that eigenvalue is isolated by ``gap``), the pairs are
            orthonormal, and a Ritz value never exceeds in magnitude the eigenvalue of the same
            rank on its side of zero. *Not* guaranteed: that they are the k largest (see the
            module docstring). Measured against exact spectra: clusters with relative gaps
            ≥ 3·tol and multiplicities ≤ min(k, 3) come out right for k=1..5.
        max_iter: thick restarts at most (each ~``ncv - k`` HVPs).
        dtype: basis precision (default: the parameters', which the HVPs run in; the projected
            matrix is float64).
        seed: seeds the random start vectors.
        ncv: the largest basis before a thick restart (default ``max(2k+1, 20)``); a restart
            keeps the best ``k + (ncv-k)//2`` Ritz vectors.
        start: ``"auto"`` (normalised first gradient plus a normalised random vector),
            ``"gradient"``, ``"random"``, or a tensor ``[n]`` / ``[j, n]`` flat over ``params``
            (rows normalised and summed, ``"auto"``'s vector added: a warm start).
        block: the start vector plus ``block - 1`` random vectors; default ``min(k, 3)``.

    Cost: one forward + backward with ``create_graph`` (≈ 1/2 HVP), one HVP per step (width-16
    MAE on 1,792 parameters at 1e-3: ~13 for k=1, 36 for k=3, 46 for k=5), reorthogonalisation
    against ``≤ ncv + block + 1`` basis vectors of ``n`` parameters (also the memory).
    """
    k = positive_int("k", k)
    params = as_param_list(params)
    warn_below_resolution(tol, dtype or params[0].dtype)
    check_lanczos_fits(params, k, ncv, block, dtype)  # before the loss is computed
    begin = time.perf_counter()
    op = HVPOperator(loss_fn, params)
    if op.numel <= max(DENSE_LIMIT, k):
        eigs, vecs = _dense_top(op, k)
    else:
        eigs, vecs = _thick_restart(op, k, tol, max_iter, dtype, seed, ncv, start, block)
    values = torch.as_tensor(eigs, dtype=torch.float64)  # [k], largest magnitude first
    return HessianResult(values, op.count, time.perf_counter() - begin, "lanczos", op.numel,
                         vecs.to(params[0].dtype))


def _dense_top(op: HVPOperator, k: int) -> tuple[np.ndarray, torch.Tensor]:
    """Exact: n HVPs, then a dense symmetric eigendecomposition -> ([k], [k, n])."""
    n, p0 = op.numel, op.params[0]
    eye = torch.eye(n, dtype=p0.dtype, device=p0.device)
    h = torch.stack([op(eye[j]) for j in range(n)], dim=1).to(torch.float64).cpu()  # [n, n]
    eigs, vecs = torch.linalg.eigh(0.5 * (h + h.T))
    order = torch.argsort(-eigs.abs(), stable=True)[:k]
    return eigs[order].numpy(), vecs[:, order].T


def start_vector(op: HVPOperator, start, seed: int, dtype: torch.dtype, device) -> torch.Tensor:
    """The first block vector [n] (see ``start`` of :func:`top_eigenpairs`)."""
    n = op.numel
    rand = torch.randn(n, generator=torch.Generator().manual_seed(int(seed)),
                       dtype=torch.float64).to(device, dtype)
    rand = rand / rand.norm()
    grad = op.gradient.to(dtype)
    gnorm = grad.norm()
    grad = grad / gnorm if gnorm > 0 and torch.isfinite(gnorm) else torch.zeros_like(rand)
    if isinstance(start, str):
        if start == "random":
            return rand
        if start == "gradient":
            return grad if gnorm > 0 else rand
        if start == "auto":
            return grad + rand
        raise ValueError(f"start must be 'auto', 'gradient', 'random' or a tensor, got {start!r}")
    block = torch.as_tensor(start).to(device, dtype).reshape(-1, n)  # [j, n]
    norms = block.norm(dim=1, keepdim=True)
    block = block[norms[:, 0] > 0] / norms[norms[:, 0] > 0]
    return block.sum(0) / max(1, block.shape[0]) ** 0.5 + grad + rand


def _thick_restart(op: HVPOperator, k: int, tol: float, max_iter: int, dtype, seed: int,
                   ncv: int | None, start, block: int | None) -> tuple[np.ndarray, torch.Tensor]:
    """Thick-restart block Lanczos (Wu & Simon; block as in Golub & Underwood) -> the k wanted
    Ritz values [k] (largest magnitude first) and vectors [k, n]. The first block vector is the
    start vector, the others are random; a restart keeps the best Ritz vectors and the
    frontier."""
    n, p0 = op.numel, op.params[0]
    device, vdtype = p0.device, p0.dtype if dtype is None else dtype
    block, ncv = lanczos_sizes(k, n, ncv, block)
    if not 1 <= block <= n:
        raise ValueError(f"block must be between 1 and the number of parameters, got {block}")
    tiny = torch.finfo(vdtype).eps
    gen = torch.Generator().manual_seed(int(seed) + 1)

    def random_vector():  # [n]
        return torch.randn(n, generator=gen, dtype=torch.float64).to(device, vdtype)

    kry = Lanczos(n, ncv + block + 1, vdtype, device)
    kry.add(start_vector(op, start, seed, vdtype, device))
    while kry.p < block and kry.add(random_vector()):
        pass
    restarts = 0
    while True:
        if kry.p == 0:  # the basis is an invariant subspace: go on in a fresh direction
            kry.add(random_vector())
        kry.expand(op)
        theta, S, resid = kry.ritz()
        converged = resid[:k] <= tol * np.maximum(np.abs(theta[:k]), tiny * abs(theta[0]))
        if (kry.m >= k and bool(np.all(converged))) or kry.m >= n:
            break
        if kry.m + kry.p > ncv:
            if restarts >= max_iter:
                warnings.warn(f"Lanczos stopped after {op.count} Hessian-vector products "
                              f"({max_iter} restarts) before reaching tol {tol}: relative "
                              f"residuals {(resid[:k] / np.abs(theta[:k])).tolist()}",
                              RuntimeWarning)
                break
            restarts += 1
            kry.restart(theta, S, max(k, min(k + (ncv - k - kry.p) // 2, kry.m - 1)))
    return theta[:k].astype(np.float64), kry.vectors(S[:, :k])
