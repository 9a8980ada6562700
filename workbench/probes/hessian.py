"""Top Hessian eigenvalues of a loss, and the Hessian max-eigenvalue spectrum of MAE / MFF-MAE.

Semantics (Park & Kim, ICLR 2022; MFF uses the same plot): the "top-k eigenvalues" are the k
eigenvalues of largest *magnitude* -- what power iteration finds -- with their signs kept, sorted
by descending magnitude. A saddle's large negative curvature therefore appears as a negative entry
rather than being skipped.

Engine: Hessian-vector products (HVPs) by double backward. The loss and its first gradient (with
``create_graph=True``) are computed once per call; every HVP is one more backward through that
retained graph, ``Hv = d(g . v)/dθ``. The HVP operator is handed to ARPACK's implicitly restarted
Lanczos (``scipy.sparse.linalg.eigsh(which="LM")``), which needs far fewer products than power
iteration with deflation. pyhessian (the reference tool) runs on the same problem with
``backend="pyhessian"``.

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
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..config import check_mask_ratio, check_mask_strategy

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


def math_attention() -> contextlib.AbstractContextManager:
    """Force the plain (math) SDPA implementation, which supports double backward."""
    return sdpa_kernel(SDPBackend.MATH)


def _as_param_list(params: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    params = [p for p in params]
    if not params:
        raise ValueError("no parameters given: the Hessian would be empty")
    bad = [i for i, p in enumerate(params) if not p.requires_grad]
    if bad:
        raise ValueError(f"parameters {bad} do not require grad; pass only trainable tensors")
    return params


def top_hessian_eigenvalues(loss_fn: Callable[[], torch.Tensor], params: Iterable[torch.Tensor],
                            k: int = 1, tol: float = 1e-4, max_iter: int = 100,
                            backend: str = "lanczos", dtype: torch.dtype = torch.float64,
                            seed: int = 0, ncv: int | None = None, return_info: bool = False
                            ) -> torch.Tensor | HessianResult:
    """The ``k`` eigenvalues of largest magnitude of the Hessian of ``loss_fn()`` w.r.t. ``params``.

    Args:
        loss_fn: a callable returning a scalar loss; called once (it builds the graph the HVPs
            reuse). It runs under math attention.
        params: tensors with ``requires_grad``. Parameters the loss does not depend on are allowed:
            their Hessian rows and columns are zero (they only add zero eigenvalues).
        k: how many eigenvalues.
        tol: ``lanczos``: ARPACK's relative accuracy of the Ritz values; ``pyhessian``: its
            stopping rule, the relative change of the eigenvalue between two power iterations
            (a much weaker guarantee: compare engines at equal measured accuracy, not equal tol).
        max_iter: ``lanczos``: the maximum number of implicit restarts (ARPACK ``maxiter``);
            ``pyhessian``: power iterations per eigenvalue.
        backend: ``"lanczos"`` (ours) or ``"pyhessian"``.
        dtype: precision of the Lanczos vectors and of the dense fallback (``lanczos`` only). The
            HVPs themselves run in the parameters' own precision; for a fully float64 computation
            pass float64 parameters (``hessian_spectrum(..., dtype=torch.float64)`` does).
        seed: seeds the Lanczos start vector / pyhessian's random vectors (deterministic results).
        ncv: ``lanczos``: Lanczos basis size (ARPACK ``ncv``; scipy's default ``max(2k+1, 20)``).
            Every restart cycle costs about ``ncv - k`` HVPs; a smaller basis (e.g. 8 for k=1)
            can reach a loose ``tol`` with fewer HVPs, a larger one helps clustered spectra.
        return_info: return a :class:`HessianResult` (eigenvalues, HVP count, wall time).

    Returns:
        [k] float64 tensor, sorted by descending ``|λ|``, signs kept (or a HessianResult).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    params = _as_param_list(params)
    start = time.perf_counter()
    if backend == "lanczos":
        eigs, count, n = _lanczos(loss_fn, params, int(k), tol, max_iter, dtype, seed, ncv)
    else:
        eigs, count, n = _pyhessian(loss_fn, params, int(k), tol, max_iter, seed)
    order = np.argsort(-np.abs(eigs), kind="stable")
    values = torch.as_tensor(np.asarray(eigs)[order], dtype=torch.float64)
    if return_info:
        return HessianResult(values, count, time.perf_counter() - start, backend, n)
    return values


# ------------------------------------------------------------------------------ our engine
class HVPOperator:
    """``v ↦ H v`` for flat vectors, reusing one retained graph of the first gradient."""

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

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        """flat [n] -> flat [n], in the parameters' dtype."""
        self.count += 1
        if not self.grads:  # the loss is at most linear in params: H = 0
            return torch.zeros_like(v)
        chunks = self._split(v)
        with math_attention():
            hv = torch.autograd.grad(self.grads, self.params,
                                     grad_outputs=[chunks[i] for i in self.live],
                                     retain_graph=True, allow_unused=True)
        return torch.cat([(torch.zeros_like(p) if h is None else h).reshape(-1)
                          for p, h in zip(self.params, hv)])

    def _split(self, v: torch.Tensor) -> list[torch.Tensor]:
        out, i = [], 0
        for p in self.params:
            out.append(v[i:i + p.numel()].view_as(p).to(p.dtype))
            i += p.numel()
        return out


def _lanczos(loss_fn, params, k, tol, max_iter, dtype, seed, ncv=None):
    op = HVPOperator(loss_fn, params)
    n = op.numel
    device, pdtype = params[0].device, params[0].dtype
    np_dtype = np.float64 if dtype == torch.float64 else np.float32
    if n <= max(DENSE_LIMIT, k):  # exact: n HVPs, then a dense symmetric eigendecomposition
        eye = torch.eye(n, dtype=pdtype, device=device)
        h = torch.stack([op(eye[j]) for j in range(n)], dim=1).to(torch.float64).cpu()
        h = 0.5 * (h + h.T)
        eigs = torch.linalg.eigvalsh(h).numpy()
        eigs = eigs[np.argsort(-np.abs(eigs), kind="stable")][:k]
        return eigs, op.count, n

    def matvec(x: np.ndarray) -> np.ndarray:
        v = torch.from_numpy(np.ascontiguousarray(x, dtype=np_dtype).reshape(-1)).to(device, pdtype)
        return op(v).detach().cpu().numpy().astype(np_dtype)

    lin = LinearOperator((n, n), matvec=matvec, dtype=np_dtype)
    v0 = np.random.default_rng(seed).standard_normal(n).astype(np_dtype)
    try:
        if ncv is not None:
            ncv = min(max(int(ncv), k + 2), n)
        eigs = eigsh(lin, k=k, which="LM", tol=tol, maxiter=max_iter, v0=v0, ncv=ncv,
                     return_eigenvectors=False)
    except ArpackNoConvergence as e:
        if len(e.eigenvalues) < k:
            raise RuntimeError(
                f"Lanczos found only {len(e.eigenvalues)} of {k} eigenvalues after "
                f"{op.count} Hessian-vector products (max_iter={max_iter} restarts); raise "
                f"max_iter or loosen tol ({tol})") from e
        eigs = e.eigenvalues
    return np.asarray(eigs, dtype=np.float64), op.count, n


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
ENCODER_PREFIXES = ("patch_embed.", "cls_token", "pos_embed", "encoder_mask_token", "blocks.",
                    "norm.")


def select_parameters(model: nn.Module, params: str | Sequence = "all") -> list[nn.Parameter]:
    """Trainable parameters of ``model``: ``"all"``, ``"encoder"`` (patch embedding, cls token,
    blocks, final norm), ``"decoder"`` (everything else: MFF fusion, decoder, mask token), or a
    list of parameter-name prefixes / tensors."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if isinstance(params, str):
        if params == "all":
            out = [p for _, p in named]
        elif params == "encoder":
            out = [p for n, p in named if n.startswith(ENCODER_PREFIXES)]
        elif params == "decoder":
            out = [p for n, p in named if not n.startswith(ENCODER_PREFIXES)]
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
                     mask_strategy: str | None = None, tol: float = 1e-4, max_iter: int = 100,
                     backend: str = "lanczos", dtype: torch.dtype = torch.float32,
                     progress: bool = True) -> torch.Tensor:
    """Top-k Hessian eigenvalues (largest magnitude, signs kept) of the reconstruction loss,
    one row per minibatch -> [n_batches, k] float64.

    ``batches``: an iterable of image tensors [B, C, H, W] (or (images, labels) pairs), or one
    image tensor (a single batch). Batch ``i`` is masked with the fixed seed ``seed + i``
    (``mask_ratio`` / ``mask_strategy`` default to the model's config). The model is evaluated in
    eval mode (its mode is restored afterwards) and in ``dtype`` (float32 as in the protocol;
    float64 runs on a copy); each batch's graph is freed before the next. The loss has no weight
    decay term (Park & Kim add wd·I; add ``wd`` to the eigenvalues to compare).
    ``params`` restricts the Hessian to a parameter subset (see :func:`select_parameters`).
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
    was_training = work.training
    work.eval()
    rows = []
    try:
        total = len(batches) if hasattr(batches, "__len__") else None
        for i, batch in enumerate(tqdm(batches, total=total, desc="Hessian spectrum",
                                       disable=not progress)):
            imgs = _batch_images(batch).to(device, dtype)

            def loss_fn(imgs=imgs, i=i):
                return work(imgs, mask_ratio=ratio, mask_strategy=strategy, seed=seed + i).loss

            rows.append(top_hessian_eigenvalues(loss_fn, chosen, k=k, tol=tol, max_iter=max_iter,
                                                backend=backend, seed=seed + i))
    finally:
        work.train(was_training)
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
