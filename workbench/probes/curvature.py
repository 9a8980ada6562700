"""Hessian trace and spectral density of a loss ("beyond pyhessian", issue 16).

Both run on Hessian-vector products (HVPs, :class:`~workbench.probes.hessian.HVPOperator`: one
forward + first backward with ``create_graph``, then one double backward per product) and never
form the Hessian.

* :func:`hessian_trace` -- Hutchinson's estimator: ``tr H = E[zᵀHz]`` for Rademacher ``z``
  (Hutchinson 1989; Avron & Toledo 2011). One HVP per probe; the probes are independent, so a
  t interval over the per-probe values is an honest confidence interval for the trace. For a
  diagonal Hessian every probe gives the exact trace; in general a probe's variance is
  ``2 Σ_{i≠j} H_ij²``.
* :func:`hessian_density` -- stochastic Lanczos quadrature (SLQ; Ubaru, Chen & Saad 2017, as
  used by Ghorbani, Krishnan & Xiao 2019 and pyhessian's ``density``): ``m`` Lanczos steps from
  a random unit probe give a tridiagonal ``T``; its eigenvalues ``θ_k`` (nodes) and the squared
  first components of its eigenvectors ``τ_k²`` (weights) form an ``m``-point Gauss quadrature
  of the probe's spectral measure, whose average over probes estimates the eigenvalue density
  ``(1/n) Σ_i δ(λ - λ_i)``. A Gaussian of width ``σ`` smooths it onto a grid.

Both take a zero-argument ``loss_fn`` (built once, under math attention) and the parameters to
differentiate; :func:`mae_loss_fn` builds the MAE / MFF-MAE reconstruction loss with fixed masks.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import scipy.linalg
import scipy.stats
import torch
import torch.nn as nn

from ..models.modes import eval_mode
from ..core.results import AsDict
from ..core.sizes import check_hessian_fits, check_vectors_fit
from .hessian import AnnouncedHVPOperator, _as_param_list


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def mae_loss_fn(model: nn.Module, batches, seed: int = 0, mask_ratio: float | None = None,
                mask_strategy: str | None = None) -> Callable[[], torch.Tensor]:
    """A zero-argument closure: the mean reconstruction loss of ``model`` over ``batches``
    (image tensors [B, C, H, W], (images, labels) pairs, or one image tensor), batch ``i``
    masked with the fixed seed ``seed + i`` (the convention of ``hessian_spectrum``), so every
    call -- and every model given the same arguments -- sees the same masks. The model's mode is
    left as it is (call ``model.eval()`` for the protocol's eval mode)."""
    if isinstance(batches, torch.Tensor):
        batches = [batches]
    imgs = [b[0] if isinstance(b, (tuple, list)) else b for b in batches]
    if not imgs or any(not isinstance(x, torch.Tensor) or x.ndim != 4 for x in imgs):
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
    return sum(int((b[0] if isinstance(b, (tuple, list)) else b).shape[0]) for b in batches)


# ------------------------------------------------------------------------------ trace
@dataclass
class TraceEstimate(AsDict):
    estimate: float  # mean of the per-probe values zᵀHz
    ci: tuple[float, float]  # t interval at ``ci_level`` ((-inf, inf) with one probe)
    ci_level: float
    num_hvps: int  # one per probe (the forward + first backward come on top, ≈ 1/2 HVP)
    samples: np.ndarray  # [s] float64 per-probe values zᵀHz
    num_params: int
    stopped_early: bool  # the relative tolerance was met before num_samples probes
    seconds: float

    @property
    def half_width(self) -> float:
        return 0.5 * (self.ci[1] - self.ci[0])


def _t_interval(samples: np.ndarray, level: float) -> tuple[float, float]:
    mean = float(samples.mean())
    if samples.size < 2:
        return (-float("inf"), float("inf"))
    sem = float(samples.std(ddof=1)) / np.sqrt(samples.size)
    if sem == 0.0:  # every probe agreed (e.g. a diagonal Hessian): exact for Rademacher probes
        return (mean, mean)
    low, high = scipy.stats.t.interval(level, df=samples.size - 1, loc=mean, scale=sem)
    return (float(low), float(high))


def hessian_trace(loss_fn: Callable[[], torch.Tensor], params: Iterable[torch.Tensor],
                  num_samples: int = 100, seed: int = 0, ci: float = 0.95,
                  rtol: float | None = None, min_samples: int = 10) -> TraceEstimate:
    """Hutchinson estimate of ``tr H`` (H: Hessian of ``loss_fn()`` w.r.t. ``params``).

    Args:
        loss_fn: zero-argument callable returning a scalar loss; called once.
        params: tensors with ``requires_grad`` (e.g. ``select_parameters(model, "decoder")``).
        num_samples: Rademacher probes (= HVPs) at most.
        seed: seeds the probes (same seed, same probes).
        ci: confidence level of the t interval over the per-probe values.
        rtol: stop early once the interval's half-width is ``<= rtol·|estimate|`` (checked
            from ``min_samples`` probes on). Stopping on the data makes the interval slightly
            optimistic; leave ``None`` for the nominal coverage.
    """
    num_samples = _positive_int("num_samples", num_samples)
    min_samples = _positive_int("min_samples", min_samples)
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be in (0, 1), got {ci!r}")
    if rtol is not None and not rtol > 0:
        raise ValueError(f"rtol must be > 0 or None, got {rtol!r}")
    params = _as_param_list(params)
    begin = time.perf_counter()
    op = AnnouncedHVPOperator(loss_fn, params, "hessian_trace", num_samples)  # says a long cost
    n, device, dtype = op.numel, params[0].device, params[0].dtype
    gen = torch.Generator().manual_seed(int(seed))
    values, stopped = [], False
    for s in range(num_samples):
        z = (torch.randint(0, 2, (n,), generator=gen) * 2 - 1).to(device, dtype)  # [n] ±1
        values.append(float(torch.dot(z.double(), op(z).double())))
        if rtol is not None and s + 1 >= max(min_samples, 2) and s + 1 < num_samples:
            low, high = _t_interval(np.asarray(values), ci)
            if 0.5 * (high - low) <= rtol * abs(np.mean(values)):
                stopped = True
                break
    samples = np.asarray(values, dtype=np.float64)
    return TraceEstimate(float(samples.mean()), _t_interval(samples, ci), float(ci), op.count,
                         samples, n, stopped, time.perf_counter() - begin)


# ------------------------------------------------------------------------------ density
@dataclass
class SpectralDensity(AsDict):
    grid: np.ndarray  # [G] eigenvalue axis
    density: np.ndarray  # [G] smoothed density (integrates to ~1 over the default grid)
    nodes: np.ndarray  # [P, m] Ritz values per probe (padded with weight 0 on early stop)
    weights: np.ndarray  # [P, m] quadrature weights τ², each row sums to 1
    sigma: float  # Gaussian smoothing width
    ritz_min: float  # smallest / largest Ritz value over all probes: estimates of λ_min, λ_max
    ritz_max: float
    num_hvps: int  # num_probes · lanczos_steps (fewer if a Krylov space closed early)
    num_params: int
    seconds: float


def smooth_spectrum(grid, eigenvalues, sigma: float, weights=None) -> np.ndarray:
    """Σ_k w_k N(x; λ_k, σ²) on ``grid`` [G] -> [G]; uniform weights ``1/len`` by default.
    Smooth an exact spectrum with this to compare it with :func:`hessian_density`."""
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma!r}")
    lam = np.asarray(eigenvalues, dtype=np.float64).reshape(-1)  # [K]
    w = np.full(lam.size, 1.0 / lam.size) if weights is None else \
        np.asarray(weights, dtype=np.float64).reshape(-1)
    x = np.asarray(grid, dtype=np.float64).reshape(-1, 1)  # [G, 1]
    return scipy.stats.norm.pdf(x, loc=lam, scale=sigma) @ w  # [G, K] @ [K] -> [G]


def lanczos_tridiagonal(op: Callable[[torch.Tensor], torch.Tensor], v: torch.Tensor,
                        steps: int, reorthogonalize: bool = True):
    """``steps`` Lanczos steps on the symmetric operator ``op`` from ``v`` [n] ->
    (alpha [j], beta [j-1]) of the tridiagonal ``T = QᵀHQ``, ``j <= steps`` (fewer when the
    Krylov space closes: then the nodes are exact eigenvalues). Full reorthogonalisation
    (Gram-Schmidt twice against every basis vector) keeps ``Q`` orthonormal in floating point;
    without it (``reorthogonalize=False``: three-term recurrence, ``O(n)`` memory instead of
    ``O(n·steps)``) converged Ritz values reappear as spurious copies ("ghosts")."""
    n = v.numel()
    steps = min(steps, n)
    Q = torch.empty(steps if reorthogonalize else 0, n, dtype=v.dtype, device=v.device)  # [m, n]
    q, q_prev, b_prev = v / v.norm(), torch.zeros_like(v), 0.0
    alpha, beta, scale = [], [], 0.0
    eps = torch.finfo(v.dtype).eps
    for j in range(steps):
        w = op(q).to(v.dtype)  # [n]
        a = float(torch.dot(q.double(), w.double()))
        alpha.append(a)
        if reorthogonalize:
            Q[j] = q
            basis = Q[:j + 1]
            for _ in range(2):  # "twice is enough"
                w = w - basis.T @ (basis @ w)
        else:
            w = w - a * q - b_prev * q_prev
        b = float(w.norm())
        scale = max(scale, abs(a), b)
        if j == steps - 1 or b <= 100 * eps * scale:  # done, or an invariant subspace
            break
        beta.append(b)
        q_prev, q, b_prev = q, w / b, b
    return np.asarray(alpha), np.asarray(beta)


def hessian_density(loss_fn: Callable[[], torch.Tensor], params: Iterable[torch.Tensor],
                    num_probes: int = 4, lanczos_steps: int = 60,
                    grid: int | Sequence[float] = 512, sigma: float | None = None,
                    seed: int = 0, reorthogonalize: bool = True) -> SpectralDensity:
    """Eigenvalue density of the Hessian of ``loss_fn()`` by stochastic Lanczos quadrature.

    Args:
        num_probes: random Rademacher start vectors (the quadratures are averaged).
        lanczos_steps: Lanczos steps (= HVPs) per probe; the extreme Ritz values converge first,
            the bulk needs more steps. Memory: ``lanczos_steps`` vectors of ``n`` parameters.
        grid: number of points of the default grid (``ritz_min - 5σ .. ritz_max + 5σ``, on
            which the density integrates to 1 up to ~1e-6), or the grid itself [G] (mass
            outside it is lost).
        sigma: Gaussian width; default ``0.01·(ritz_max - ritz_min)``.
        seed: seeds the probes.
        reorthogonalize: see :func:`lanczos_tridiagonal` (keep ``True`` unless memory forbids).

    Cost: ``num_probes · lanczos_steps`` HVPs plus one forward + first backward.
    """
    num_probes = _positive_int("num_probes", num_probes)
    steps = _positive_int("lanczos_steps", lanczos_steps)
    params = _as_param_list(params)
    n = sum(p.numel() for p in params)
    if reorthogonalize:  # the Lanczos basis, before the loss is computed
        check_vectors_fit(min(steps, n), n, params[0].element_size(), params[0].device,
                          f"hessian_density(lanczos_steps={steps}) Lanczos basis",
                          "lower lanczos_steps, pass reorthogonalize=False (O(n) memory) or "
                          "pick a parameter subset (select_parameters)")
    begin = time.perf_counter()
    op = AnnouncedHVPOperator(loss_fn, params, "hessian_density", num_probes * min(steps, n))
    n, device, dtype = op.numel, params[0].device, params[0].dtype
    gen = torch.Generator().manual_seed(int(seed))
    m = min(steps, n)
    nodes, weights = np.zeros((num_probes, m)), np.zeros((num_probes, m))
    for p in range(num_probes):
        v = (torch.randint(0, 2, (n,), generator=gen) * 2 - 1).to(device, dtype)  # [n] ±1
        alpha, beta = lanczos_tridiagonal(op, v, m, reorthogonalize)
        theta, S = scipy.linalg.eigh_tridiagonal(alpha, beta)  # [j], [j, j]
        j = theta.size
        nodes[p, :j], weights[p, :j] = theta, S[0] ** 2
        nodes[p, j:] = theta[-1]  # padding: weight 0
    used = weights > 0
    lo, hi = float(nodes[used].min()), float(nodes[used].max())
    if sigma is None:
        sigma = 0.01 * ((hi - lo) if hi > lo else max(abs(hi), 1.0))
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma!r}")
    if np.ndim(grid) == 0:
        x = np.linspace(lo - 5 * sigma, hi + 5 * sigma, _positive_int("grid", grid))
    else:
        x = np.asarray(grid, dtype=np.float64).reshape(-1)
    density = smooth_spectrum(x, nodes, sigma, weights / num_probes)
    return SpectralDensity(x, density, nodes, weights, float(sigma), lo, hi, op.count, n,
                           time.perf_counter() - begin)


# ------------------------------------------------------------------------------ models
def compare_curvature(models: Mapping[str, nn.Module], batches, params: str | Sequence = "all",
                      seed: int = 0, trace: dict | None = None,
                      density: dict | None = None) -> dict[str, dict]:
    """Trace and density of several models (e.g. ``{"MAE": mae, "MFF-MAE": mff}``) on the same
    batches, masks (batch ``i`` masked with seed ``seed + i``) and probe seed ->
    ``{name: {"trace": TraceEstimate, "density": SpectralDensity}}``.

    ``params`` picks the parameters (``select_parameters``: ``"all"``, ``"encoder"``,
    ``"decoder"`` or name prefixes); ``trace`` / ``density`` are keyword arguments for
    :func:`hessian_trace` / :func:`hessian_density` (e.g. ``{"num_samples": 50}``). Each
    model builds its loss graph twice (once per probe). Models run in eval mode (their modes
    are restored).
    """
    from .hessian import select_parameters

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
