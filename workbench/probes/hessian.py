"""Top Hessian eigenvalues of a loss, and the Hessian max-eigenvalue spectrum of MAE / MFF-MAE.

Semantics (Park & Kim, ICLR 2022; MFF uses the same plot): the "top-k eigenvalues" are the k
eigenvalues of largest *magnitude* -- what power iteration finds -- with their signs kept, sorted
by descending magnitude. A saddle's large negative curvature therefore appears as a negative entry
rather than being skipped.

Engine: Hessian-vector products (HVPs) by double backward. The loss and its first gradient (with
``create_graph=True``) are computed once per call; every HVP is one more backward through that
retained graph, ``Hv = d(g . v)/dθ``. The HVP operator drives a thick-restart block Lanczos
iteration written in torch (block ``b = min(k, 3)`` by default, applied one HVP at a time) (full reorthogonalisation, basis in the parameters' dtype, no numpy copies of
the vectors), which needs far fewer products than power iteration with deflation:

* start vector: the first gradient (free: it is already computed) plus a random vector. A
  network's gradient lies mostly in the top Hessian eigenspace, so the top eigenvalue is
  typically accurate to 1e-3 after ~3 HVPs instead of ~6-9 from a random start;
* stopping rule: every wanted Ritz pair has relative residual ``‖Hy − θy‖ ≤ tol·|θ|`` (read off
  the recurrence, no extra products). That guarantees each returned θ lies within ``tol·|θ|`` of
  *some* eigenvalue of H -- not that the k returned values are the k largest: a Krylov method can
  miss an eigenvalue its space has not yet resolved (a tight cluster) or cannot hold (an
  eigenvalue repeated more than ``b`` times: a block-``b`` Krylov space holds at most ``b``
  vectors of one eigenspace in exact arithmetic). The block start resolves clusters and
  multiplicities up to ``b`` in practice (tested against exact spectra); k=1 stays single-vector;
* ``hessian_spectrum`` warm-starts each minibatch from the previous one's eigenvectors.

Batched HVPs (one vmapped backward for several vectors, ``HVPOperator.batched``) were measured
slower per product than single ones on CPU, so the engine uses single products. pyhessian (the
reference tool) runs on the same problem with ``backend="pyhessian"``.

Fused scaled-dot-product-attention kernels have no double backward on CPU, so the loss, its
gradient and every HVP are computed under ``sdpa_kernel(SDPBackend.MATH)``: callers never need to
switch attention implementations themselves.
"""
from __future__ import annotations

import contextlib
import copy
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn as nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..core.config import check_mask_ratio, check_mask_strategy
from ..models import eval_mode
from ..core.sizes import announce_cost, check_hessian_fits, check_vectors_fit

BACKENDS = ("lanczos", "pyhessian")
# Below this many parameters the Hessian is built densely (one HVP per column) and diagonalised:
# exact, and ARPACK needs k < n anyway.
DENSE_LIMIT = 64


@dataclass
class HessianResult:
    eigenvalues: torch.Tensor  # [k] float64, largest magnitude first, signs kept
    num_hvps: int  # Hessian-vector products used (the unit of cost)
    seconds: float  # wall time, including the forward and first backward
    backend: str
    num_params: int  # dimension of the Hessian (parameters that get a gradient count; see below)
    eigenvectors: torch.Tensor | None = None  # [k, n] unit vectors, same order (lanczos only)

    def to_dict(self, eigenvectors: bool = False) -> dict:
        """JSON-ready values; the eigenvectors ([k, n], as large as the model) only on request."""
        d = {"eigenvalues": self.eigenvalues.tolist(), "num_hvps": int(self.num_hvps),
             "seconds": float(self.seconds), "backend": self.backend,
             "num_params": int(self.num_params)}
        if eigenvectors:
            d["eigenvectors"] = None if self.eigenvectors is None else self.eigenvectors.tolist()
        return d


def math_attention() -> contextlib.AbstractContextManager:
    """Force the plain (math) SDPA implementation, which supports double backward."""
    return sdpa_kernel(SDPBackend.MATH)


def _warn_below_resolution(tol: float, dtype: torch.dtype) -> None:
    """Residuals of HVPs in ``dtype`` stall near ~10 eps on large models (float32: ~1e-6): a
    smaller ``tol`` is never reached and the run lasts until ``max_iter``."""
    floor = 10 * torch.finfo(dtype).eps
    if tol < floor:
        warnings.warn(f"tol {tol:g} is below what {dtype} Hessian-vector products resolve "
                      f"(~{floor:.0e}): on large models the residuals stall near that floor and "
                      f"the run lasts until max_iter; use float64 parameters or a larger tol",
                      RuntimeWarning)


def _as_param_list(params: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    params = [p for p in params]
    if not params:
        raise ValueError("no parameters given: the Hessian would be empty")
    bad = [i for i, p in enumerate(params) if not p.requires_grad]
    if bad:
        raise ValueError(f"parameters {bad} do not require grad; pass only trainable tensors")
    return params


def top_hessian_eigenvalues(loss_fn: Callable[[], torch.Tensor], params: Iterable[torch.Tensor],
                            k: int = 1, tol: float = 1e-3, max_iter: int = 100,
                            backend: str = "lanczos", dtype: torch.dtype | None = None,
                            seed: int = 0, ncv: int | None = None, start="auto",
                            block: int | None = None,
                            return_info: bool = False) -> torch.Tensor | HessianResult:
    """The ``k`` eigenvalues of largest magnitude of the Hessian of ``loss_fn()`` w.r.t. ``params``.

    Args:
        loss_fn: a callable returning a scalar loss; called once (it builds the graph the HVPs
            reuse). It runs under math attention.
        params: tensors with ``requires_grad``. Parameters the loss does not depend on are allowed:
            their Hessian rows and columns are zero (they only add zero eigenvalues).
        k: how many eigenvalues.
        tol: ``lanczos``: stop once every one of the ``k`` wanted Ritz pairs ``(θ, y)`` has a
            relative residual ``‖Hy − θy‖ ≤ tol·|θ|``. Guaranteed (up to the HVPs' rounding,
            float32: ~1e-6): each returned θ has an eigenvalue of H within ``tol·|θ|`` (within
            ``(tol·θ)²/gap`` if that eigenvalue is isolated by ``gap``), the k returned pairs are
            orthonormal Ritz pairs, and a Ritz value never exceeds in magnitude the eigenvalue of
            the same rank on its side of zero (interlacing: errors are underestimates).
            *Not* guaranteed: that the k returned values are the k largest -- no Krylov method
            can prove no eigenvalue was missed. Missing one happens when an eigenvalue's
            direction is not yet resolved in the Krylov space (a cluster whose gaps are a few
            ``tol``) or cannot be held (multiplicity above ``block``). Measured against exact
            spectra: with the default block, clusters with relative gaps ≥ 3·tol and
            multiplicities ≤ min(k, 3) come out right for k=1..5; gaps of 1-2·tol can swap or
            skip members of the cluster (the error is then about one gap).
            ``pyhessian``: its stopping rule, the relative change of the eigenvalue between two
            power iterations (a much weaker guarantee: compare engines at equal measured
            accuracy, not equal tol).
        max_iter: ``lanczos``: thick restarts at most (each ~``ncv - k`` HVPs);
            ``pyhessian``: power iterations per eigenvalue.
        backend: ``"lanczos"`` (ours, the default) or ``"pyhessian"``.
        dtype: ``lanczos`` basis precision (default: the parameters', which the HVPs run in;
            the projected matrix is float64). Fully float64: pass float64 parameters.
        seed: seeds the random start vectors (deterministic results).
        ncv: ``lanczos``: the largest Lanczos basis before a thick restart (default
            ``max(2k+1, 20)``); a restart keeps the best ``k + (ncv-k)//2`` Ritz vectors.
        start: ``lanczos`` start vector: ``"auto"`` (the normalised first gradient plus a
            normalised random vector: the gradient of a network loss lies mostly in the top
            Hessian eigenspace, so k=1 converges in a few HVPs; the random part keeps every
            direction represented), ``"gradient"``, ``"random"``, or a tensor ``[n]`` / ``[j, n]``
            (flat over ``params``; the rows are normalised and summed, and ``"auto"``'s vector is
            added -- e.g. the previous minibatch's eigenvectors, a warm start).
        block: ``lanczos`` block size: the start vector plus ``block - 1`` random vectors.
            Default ``min(k, 3)``: k=1 stays single-vector Lanczos (cheapest; it can miss a
            top eigenvalue hidden in a tight cluster), larger k pays ~1.5-2x the HVPs to resolve
            clusters and repeated eigenvalues. Raise it above 3 when an eigenvalue may repeat
            more often among the top k.
        return_info: return a :class:`HessianResult` (eigenvalues, HVP count, wall time, and
            for ``lanczos`` the unit eigenvectors ``[k, n]`` in the parameters' dtype).

    Returns:
        [k] float64 tensor, sorted by descending ``|λ|``, signs kept (or a HessianResult).

    Cost (``lanczos``): one forward + backward with ``create_graph`` (≈ 1/2 HVP), then one HVP per
    step (width-16 MAE on 1,792 parameters at 1e-3: ~13 for k=1, 36 for k=3, 46 for k=5), plus
    reorthogonalisation against ``m ≤ ncv`` basis vectors of ``n`` parameters (also the memory).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    params = _as_param_list(params)
    if backend == "lanczos":
        _warn_below_resolution(tol, dtype or params[0].dtype)
        check_lanczos_fits(params, int(k), ncv, block, dtype)  # before the loss is computed
        begin = time.perf_counter()
        eigs, count, n, vecs = _lanczos(loss_fn, params, int(k), tol, max_iter, dtype, seed, ncv,
                                        start, block)
    else:
        begin = time.perf_counter()
        eigs, count, n, vecs = (*_pyhessian(loss_fn, params, int(k), tol, max_iter, seed), None)
    order = np.argsort(-np.abs(eigs), kind="stable")
    values = torch.as_tensor(np.asarray(eigs)[order], dtype=torch.float64)
    if vecs is not None:
        vecs = vecs[torch.as_tensor(order.copy())]
    if return_info:
        return HessianResult(values, count, time.perf_counter() - begin, backend, n, vecs)
    return values


def exact_hessian(model: nn.Module, names: Sequence[str],
                  loss_of: Callable[[Callable[..., object]], torch.Tensor]) -> torch.Tensor:
    """The dense Hessian [n, n] of a loss w.r.t. the named parameters of ``model`` (flattened in
    the given order), by ``torch.autograd.functional.hessian`` under math attention, symmetrised.

    ``loss_of(call)`` returns the scalar loss, calling the model as ``call(*args, **kwargs)``
    (the model with the named parameters substituted), e.g.
    ``exact_hessian(model, names, lambda call: call(imgs, seed=0).loss)``. Memory n²: for small
    parameter sets -- the reference an engine is checked against.
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

    flat0 = torch.cat([named[n].detach().reshape(-1) for n in names])
    with math_attention():
        h = torch.autograd.functional.hessian(loss_of_flat, flat0)
    return 0.5 * (h + h.T)


# ------------------------------------------------------------------------------ our engine
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
        self.count = 0
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
                                   for p, g in zip(params, grads)])  # flat first gradient

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
    run will cost before going on (:func:`workbench.core.sizes.announce_cost`); tiny runs stay quiet."""

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


def check_lanczos_fits(params: list[torch.Tensor], k: int, ncv: int | None, block: int | None,
                       dtype: torch.dtype | None) -> None:
    """Refuse a Lanczos basis (``ncv + block + 1`` vectors of every parameter) that cannot fit
    where the parameters are, before the loss is computed."""
    n = sum(p.numel() for p in params)
    block, ncv = lanczos_sizes(k, n, ncv, block)
    check_vectors_fit(ncv + block + 1, n, (dtype or params[0].dtype).itemsize,
                      params[0].device, f"top_hessian_eigenvalues(k={k}) Lanczos basis",
                      "lower k or ncv, or pick a parameter subset (select_parameters)")


def lanczos_sizes(k: int, n: int, ncv: int | None, block: int | None) -> tuple[int, int]:
    """(block size, basis size) of the block Lanczos for the top ``k`` of ``n`` parameters:
    ``block = min(k, 3)`` and ``ncv = max(2k + 1, 20)`` unless given, the basis at least
    ``k + 2 block`` and at most ``n``. The basis holds ``ncv + block + 1`` vectors."""
    block = min(k, 3) if block is None else int(block)
    ncv = max(2 * k + 1, 20) if ncv is None else int(ncv)
    return block, min(max(ncv, k + 2 * block), n)


def _start_vector(op: HVPOperator, start, seed: int, dtype, device) -> torch.Tensor:
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
    block = torch.as_tensor(start).to(device, dtype).reshape(-1, n)
    norms = block.norm(dim=1, keepdim=True)
    block = block[norms[:, 0] > 0] / norms[norms[:, 0] > 0]
    return block.sum(0) / max(1, block.shape[0]) ** 0.5 + grad + rand


class _BlockKrylov:
    """An orthonormal basis ``Q`` (rows) split into ``m`` *applied* vectors, whose products with
    H are known through ``M = Q H Qᵀ`` (float64), and ``p`` *frontier* vectors, not yet applied.

    Invariant: ``H Q[:m]`` lies in ``span Q[:m+p]``. So the Rayleigh-Ritz pairs ``(θ, Q[:m]ᵀs)``
    of ``M[:m, :m]`` have the exact residual ``‖M[m:m+p, :m] s‖`` (no extra products). With one
    frontier vector this is Lanczos; with ``b`` it is block Lanczos, applied one vector at a time.
    """

    def __init__(self, n: int, capacity: int, dtype, device):
        self.Q = torch.empty(capacity, n, dtype=dtype, device=device)
        self.M = np.zeros((capacity, capacity))
        self.m = self.p = 0

    def _orthogonalise(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        basis = self.Q[:self.m + self.p]
        h = basis @ w
        w = torch.addmv(w, basis.T, h, alpha=-1)  # classical Gram-Schmidt, twice is enough
        h2 = basis @ w
        return torch.addmv(w, basis.T, h2, alpha=-1), h + h2

    def _push(self, w: torch.Tensor, norm: float) -> None:
        top = self.m + self.p
        self.Q[top] = w / norm
        self.M[top, :] = 0.0
        self.M[:, top] = 0.0
        self.p += 1

    def add(self, v: torch.Tensor) -> bool:
        """Append ``v`` (orthogonalised) to the frontier; False when it is in the span already."""
        w, _ = self._orthogonalise(v)
        norm = float(w.norm())
        if not norm > 1e-8 * float(v.norm()):
            return False
        self._push(w, norm)
        return True

    def expand(self, op: HVPOperator, floor: float) -> None:
        """Apply H to the oldest frontier vector; its new direction joins the frontier unless
        its norm is below ``floor`` (an invariant subspace: nothing new)."""
        j = self.m
        w, h = self._orthogonalise(op(self.Q[j]).to(self.Q.dtype))
        col = h.double().cpu().numpy()
        top = len(col)
        self.M[:top, j] = col
        self.M[j, :top] = col
        self.m, self.p = self.m + 1, self.p - 1
        beta = float(w.norm())
        if beta > floor:
            self._push(w, beta)
            self.M[self.m + self.p - 1, j] = self.M[j, self.m + self.p - 1] = beta

    def ritz(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ritz values (largest magnitude first), their coordinates ``S`` and residual norms."""
        m, p = self.m, self.p
        theta, S = np.linalg.eigh(self.M[:m, :m])
        order = np.argsort(-np.abs(theta), kind="stable")
        theta, S = theta[order], S[:, order]
        resid = np.linalg.norm(self.M[m:m + p, :m] @ S, axis=0) if p else np.zeros(m)
        return theta, S, resid

    def vectors(self, S: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(S.T.copy(), dtype=self.Q.dtype, device=self.Q.device) @ self.Q[:self.m]

    def restart(self, theta: np.ndarray, S: np.ndarray, keep: int) -> None:
        """Thick restart: keep the first ``keep`` Ritz vectors (M becomes diagonal on them) and
        the frontier, with their couplings."""
        m, p = self.m, self.p
        ritz, front = self.vectors(S[:, :keep]), self.Q[m:m + p].clone()
        couple = self.M[m:m + p, :m] @ S[:, :keep]
        self.Q[:keep], self.Q[keep:keep + p] = ritz, front
        self.M[:] = 0.0
        self.M[np.arange(keep), np.arange(keep)] = theta[:keep]
        self.M[keep:keep + p, :keep] = couple
        self.M[:keep, keep:keep + p] = couple.T
        self.m = keep


def _dense_top(op: HVPOperator, k: int, pdtype, device):
    """Exact: n HVPs, then a dense symmetric eigendecomposition."""
    n = op.numel
    eye = torch.eye(n, dtype=pdtype, device=device)
    h = torch.stack([op(eye[j]) for j in range(n)], dim=1).to(torch.float64).cpu()
    eigs, vecs = torch.linalg.eigh(0.5 * (h + h.T))
    order = torch.argsort(-eigs.abs(), stable=True)[:k]
    return eigs[order].numpy(), op.count, n, vecs[:, order].T.to(pdtype)


def _lanczos(loss_fn, params, k, tol, max_iter, dtype, seed, ncv=None, start="auto",
             block=None):
    """Thick-restart block Lanczos (Wu & Simon; block as in Golub & Underwood) with full
    reorthogonalisation, on single HVPs (see :class:`_BlockKrylov`).

    The first block vector is the start vector, the others are random. Stops when each of the
    ``k`` wanted Ritz pairs has residual ``≤ tol·|θ|`` (see ``top_hessian_eigenvalues`` for what
    that does and does not guarantee); a restart keeps the best Ritz vectors and the frontier.
    """
    op = HVPOperator(loss_fn, params)
    n = op.numel
    device, pdtype = params[0].device, params[0].dtype
    vdtype = pdtype if dtype is None else dtype
    if n <= max(DENSE_LIMIT, k):
        return _dense_top(op, k, pdtype, device)
    block, ncv = lanczos_sizes(k, n, ncv, block)
    if not 1 <= block <= n:
        raise ValueError(f"block must be between 1 and the number of parameters, got {block}")
    tiny = torch.finfo(vdtype).eps
    gen = torch.Generator().manual_seed(int(seed) + 1)

    def random_vector():
        return torch.randn(n, generator=gen, dtype=torch.float64).to(device, vdtype)

    kry = _BlockKrylov(n, ncv + block + 1, vdtype, device)
    kry.add(_start_vector(op, start, seed, vdtype, device))
    while kry.p < block and kry.add(random_vector()):
        pass
    restarts = 0
    while True:
        if kry.p == 0:  # the basis is an invariant subspace: go on in a fresh direction
            kry.add(random_vector())
        kry.expand(op, floor=10 * tiny * max(np.abs(np.diag(kry.M)).max(), 1e-300))
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
    return theta[:k].astype(np.float64), op.count, n, kry.vectors(S[:, :k]).to(pdtype)


# ------------------------------------------------------------------------------ pyhessian
class _ParamHolder(nn.Module):
    """pyhessian reads ``model.parameters()``: expose exactly the chosen tensors (shared, not
    copied). ``forward`` returns a placeholder; the criterion computes the real loss."""

    def __init__(self, params: list[torch.Tensor]):
        super().__init__()
        self.held = nn.ParameterList([p if isinstance(p, nn.Parameter) else nn.Parameter(p)
                                      for p in params])

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return inputs


@contextlib.contextmanager
def _count_pyhessian_hvps():
    """Count pyhessian's HVPs by wrapping the function its power iteration calls."""
    import sys

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


def _pyhessian(loss_fn, params, k, tol, max_iter, seed):
    from pyhessian import hessian as PyHessian

    if any(not isinstance(p, nn.Parameter) for p in params):
        raise ValueError("the pyhessian backend needs nn.Parameter tensors (it reads "
                         "model.parameters()); use backend='lanczos' for plain tensors")
    holder = _ParamHolder(params)
    saved = [p.grad for p in params]
    for p in params:  # pyhessian accumulates the first gradient into .grad
        p.grad = None
    dummy = torch.zeros(1, device=params[0].device)
    try:
        with math_attention(), warnings.catch_warnings(), torch.random.fork_rng(devices=[]), \
                _count_pyhessian_hvps() as count:
            warnings.filterwarnings("ignore", message=".*create_graph=True.*")
            torch.manual_seed(seed)
            h = PyHessian(holder, lambda outputs, targets: loss_fn(), data=(dummy, dummy),
                          cuda=params[0].is_cuda)
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


# ------------------------------------------------------------------------------ MAE / MFF
ENCODER_PARAMETER_PREFIXES = ("patch_embed.", "cls_token", "pos_embed", "encoder_mask_token",
                              "blocks.", "norm.")


def select_parameters(model: nn.Module, params: str | Sequence = "all") -> list[nn.Parameter]:
    """Trainable parameters of ``model``: ``"all"``, ``"encoder"`` (patch embedding, cls token,
    blocks, final norm), ``"decoder"`` (everything else: MFF fusion, decoder, mask token), or a
    list of parameter-name prefixes / tensors."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if isinstance(params, str):
        if params == "all":
            out = [p for _, p in named]
        elif params == "encoder":
            out = [p for n, p in named if n.startswith(ENCODER_PARAMETER_PREFIXES)]
        elif params == "decoder":
            out = [p for n, p in named if not n.startswith(ENCODER_PARAMETER_PREFIXES)]
        else:
            raise ValueError(
                f"params must be 'all', 'encoder', 'decoder' or a list, got {params!r}")
    else:
        items = list(params)
        if all(isinstance(x, str) for x in items):
            out = [p for n, p in named if n.startswith(tuple(items))]
        else:
            out = items
    if not out:
        raise ValueError(f"no trainable parameters selected by {params!r}")
    return out


def _batch_images(batch) -> torch.Tensor:
    if isinstance(batch, (tuple, list)):
        batch = batch[0]  # (images, labels)
    if not isinstance(batch, torch.Tensor) or batch.ndim != 4:
        raise ValueError("each batch must be an image tensor [B, C, H, W] or an (images, labels) "
                         "pair")
    return batch


def hessian_spectrum(model: nn.Module, batches, k: int = 5, params: str | Sequence = "all",
                     seed: int = 0, mask_ratio: float | None = None,
                     mask_strategy: str | None = None, tol: float = 1e-3, max_iter: int = 100,
                     backend: str = "lanczos", dtype: torch.dtype = torch.float32,
                     warm_start: bool = True, progress: bool = True) -> torch.Tensor:
    """Top-k Hessian eigenvalues (largest magnitude, signs kept) of the reconstruction loss,
    one row per minibatch -> [n_batches, k] float64.

    ``batches``: an iterable of image tensors [B, C, H, W] (or (images, labels) pairs), or one
    image tensor (a single batch). Batch ``i`` is masked with the fixed seed ``seed + i``
    (``mask_ratio`` / ``mask_strategy`` default to the model's config). The model is evaluated in
    eval mode (its mode is restored afterwards) and in ``dtype`` (float32 as in the protocol;
    float64 runs on a copy); each batch's graph is freed before the next. The loss has no weight
    decay term (Park & Kim add wd·I; add ``wd`` to the eigenvalues to compare).
    ``params`` restricts the Hessian to a parameter subset (see :func:`select_parameters`).

    ``tol`` is the engine's stopping rule (see :func:`top_hessian_eigenvalues`: for ``lanczos``
    every reported eigenvalue has relative residual ≤ ``tol``). ``warm_start`` (``lanczos``
    only): start each minibatch's Lanczos from the previous minibatch's k eigenvectors (plus the
    gradient and a random vector). Nearby minibatches share their top eigenspace, so this cuts
    the HVPs per batch; every row still meets ``tol`` on its own batch, so it differs from a
    cold start (``warm_start=False``: each row depends on its batch and ``seed + i`` only) by
    no more than the stopping tolerance allows.
    """
    from tqdm.auto import tqdm

    if isinstance(batches, torch.Tensor):
        batches = [batches]
    ratio = model.cfg.mask_ratio if mask_ratio is None else check_mask_ratio(mask_ratio)
    strategy = check_mask_strategy(mask_strategy or model.cfg.mask_strategy)
    work = model
    if next(model.parameters()).dtype != dtype:
        work = copy.deepcopy(model).to(dtype)
    chosen = select_parameters(work, params)
    device = next(work.parameters()).device
    rows, prev = [], None
    with eval_mode(work):
        total = len(batches) if hasattr(batches, "__len__") else None
        for i, batch in enumerate(tqdm(batches, total=total, desc="Hessian spectrum",
                                       disable=not progress)):
            imgs = _batch_images(batch).to(device, dtype)

            def loss_fn(imgs=imgs, i=i):
                return work(imgs, mask_ratio=ratio, mask_strategy=strategy, seed=seed + i).loss

            start = prev if (warm_start and prev is not None) else "auto"
            memory = check_hessian_fits(work, imgs.shape[0], "hessian_spectrum")  # before work
            res = top_hessian_eigenvalues(loss_fn, chosen, k=k, tol=tol, max_iter=max_iter,
                                          backend=backend, seed=seed + i, start=start,
                                          return_info=True)
            if i == 0 and total:  # the first batch timed: what the others will take
                announce_cost("hessian_spectrum", res.seconds, total - 1, "more batches", memory)
            rows.append(res.eigenvalues)
            prev = res.eigenvectors
            del res
    if not rows:
        raise ValueError("no batches given")
    return torch.stack(rows)


def spectrum_summary(eigs: torch.Tensor) -> dict[str, float]:
    """Pooled summary of eigenvalues (any shape): ``nep`` = fraction of negative eigenvalues
    (Park & Kim's negative eigenvalue proportion), ``ape`` = mean of the positive ones (average
    positive eigenvalue; nan if none), ``max``, ``median``, ``count``."""
    e = torch.as_tensor(eigs, dtype=torch.float64).reshape(-1)
    if e.numel() == 0:
        raise ValueError("no eigenvalues to summarise")
    pos = e[e > 0]
    return {"nep": float((e < 0).double().mean()),
            "ape": float(pos.mean()) if pos.numel() else float("nan"),
            "max": float(e.max()), "median": float(e.quantile(0.5)), "count": int(e.numel())}
