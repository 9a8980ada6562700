"""The Hessian max-eigenvalue spectrum of MAE / MFF-MAE: the measuring protocol the notebooks call.

* :func:`top_hessian_eigenvalues` -- the k eigenvalues of largest magnitude (signs kept) of a
  loss's Hessian, by our engine (``backend="lanczos"``: thick-restart block Lanczos,
  :func:`workbench.linalg.top_eigenpairs`) or by the reference tool (``backend="pyhessian"``,
  :mod:`workbench.probes.pyhessian_reference`), on the same problem;
* :func:`hessian_spectrum` -- Park & Kim's protocol (ICLR 2022; MFF uses the same plot): top-k
  per minibatch, each batch with its fixed seeded mask, the model in eval mode, a parameter
  subset (:func:`select_parameters`), each batch warm-started from the previous one's
  eigenvectors;
* :func:`spectrum_summary` -- the pooled numbers (negative eigenvalue proportion, average
  positive eigenvalue, max, median).

The loss, its gradient and every Hessian-vector product run under math attention
(:func:`workbench.linalg.math_attention`): callers never switch attention implementations.
"""
from __future__ import annotations

import copy
from typing import Callable, Iterable, Sequence

import torch
import torch.nn as nn

from ..core.config import check_mask_ratio, check_mask_strategy
from ..core.sizes import announce_cost, check_hessian_fits
from ..linalg import HessianResult, top_eigenpairs
from ..models import eval_mode
from .pyhessian_reference import pyhessian_top_eigenvalues

BACKENDS = ("lanczos", "pyhessian")


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
        tol: ``lanczos``: stop once every wanted Ritz pair ``(θ, y)`` has a relative residual
            ``‖Hy − θy‖ ≤ tol·|θ|``: each returned θ then has an eigenvalue of H within
            ``tol·|θ|``, but no Krylov method can prove none of the k largest was missed (a
            cluster whose gaps are a few ``tol``, a multiplicity above ``block``; see
            :func:`workbench.linalg.top_eigenpairs` for what is guaranteed and measured).
            ``pyhessian``: its stopping rule, the relative change of the eigenvalue between two
            power iterations (a much weaker guarantee: compare engines at equal measured
            accuracy, not equal tol).
        max_iter: ``lanczos``: thick restarts at most (each ~``ncv - k`` HVPs);
            ``pyhessian``: power iterations per eigenvalue.
        backend: ``"lanczos"`` (ours, the default) or ``"pyhessian"``.
        dtype, ncv, start, block: ``lanczos`` only -- basis precision, basis size before a
            restart, start vector (``"auto"``: first gradient plus a random vector,
            ``"gradient"``, ``"random"``, or a tensor ``[n]`` / ``[j, n]`` flat over ``params``:
            a warm start) and block size (default ``min(k, 3)``); see
            :func:`workbench.linalg.top_eigenpairs`.
        seed: seeds the random start vectors (deterministic results).
        return_info: return a :class:`~workbench.linalg.HessianResult` (eigenvalues, HVP count,
            wall time, and for ``lanczos`` the unit eigenvectors ``[k, n]`` in the parameters'
            dtype).

    Returns:
        [k] float64 tensor, sorted by descending ``|λ|``, signs kept (or a HessianResult).

    Cost (``lanczos``): one forward + backward with ``create_graph`` (≈ 1/2 HVP), then one HVP per
    step (width-16 MAE on 1,792 parameters at 1e-3: ~13 for k=1, 36 for k=3, 46 for k=5).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "lanczos":
        res = top_eigenpairs(loss_fn, params, k, tol, max_iter, dtype, seed, ncv, start, block)
    else:
        res = pyhessian_top_eigenvalues(loss_fn, params, k, tol, max_iter, seed)
    return res if return_info else res.eigenvalues


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


def batch_images(batch) -> torch.Tensor:
    """The images [B, C, H, W] of a batch (an image tensor or an (images, labels) pair)."""
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
            imgs = batch_images(batch).to(device, dtype)

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
