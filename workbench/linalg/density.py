"""The eigenvalue density of a Hessian by stochastic Lanczos quadrature (SLQ; Ubaru, Chen &
Saad 2017, as used by Ghorbani, Krishnan & Xiao 2019 and pyhessian's ``density``).

``m`` Lanczos steps (:func:`~workbench.linalg.lanczos.lanczos_run`) from a random unit probe
give the projected matrix ``T``; its eigenvalues ``θ_k`` (nodes) and the squared first components
of its eigenvectors ``τ_k²`` (weights) form an ``m``-point Gauss quadrature of the probe's
spectral measure, whose average over probes estimates the eigenvalue density
``(1/n) Σ_i δ(λ - λ_i)``. A Gaussian of width ``σ`` smooths it onto a grid.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np
import scipy.stats
import torch

from ..core.results import AsDict
from ..core.sizes import check_vectors_fit
from .checks import as_param_list, positive_int
from .hvp import AnnouncedHVPOperator
from .lanczos import lanczos_run
from .trace import rademacher


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


def lanczos_quadrature(op: Callable[[torch.Tensor], torch.Tensor], v: torch.Tensor, steps: int,
                       reorthogonalize: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Gauss quadrature of ``v``'s spectral measure from ``steps`` Lanczos steps ->
    (nodes [j], weights [j]) ascending, ``j <= steps``, the weights summing to 1."""
    kry = lanczos_run(op, v, steps, reorthogonalize)
    theta, S = kry.eigh()  # [j], [j, j]
    return theta, S[0] ** 2


def _grid(grid: int | Sequence[float], lo: float, hi: float, sigma: float) -> np.ndarray:
    if np.ndim(grid) == 0:
        return np.linspace(lo - 5 * sigma, hi + 5 * sigma, positive_int("grid", grid))
    return np.asarray(grid, dtype=np.float64).reshape(-1)


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
        reorthogonalize: see :mod:`workbench.linalg.lanczos` (keep ``True`` unless memory
            forbids).

    Cost: ``num_probes · lanczos_steps`` HVPs plus one forward + first backward.
    """
    num_probes = positive_int("num_probes", num_probes)
    steps = positive_int("lanczos_steps", lanczos_steps)
    params = as_param_list(params)
    n = sum(p.numel() for p in params)
    m = min(steps, n)
    if reorthogonalize:  # the Lanczos basis, before the loss is computed
        check_vectors_fit(m, n, params[0].element_size(), params[0].device,
                          f"hessian_density(lanczos_steps={steps}) Lanczos basis",
                          "lower lanczos_steps, pass reorthogonalize=False (O(n) memory) or "
                          "pick a parameter subset (select_parameters)")
    begin = time.perf_counter()
    op = AnnouncedHVPOperator(loss_fn, params, "hessian_density", num_probes * m)
    gen = torch.Generator().manual_seed(int(seed))
    nodes, weights = np.zeros((num_probes, m)), np.zeros((num_probes, m))  # [P, m]
    for p in range(num_probes):
        v = rademacher(n, gen, params[0].device, params[0].dtype)  # [n]
        theta, tau2 = lanczos_quadrature(op, v, m, reorthogonalize)
        j = theta.size
        nodes[p, :j], weights[p, :j] = theta, tau2
        nodes[p, j:] = theta[-1]  # padding: weight 0
    used = weights > 0
    lo, hi = float(nodes[used].min()), float(nodes[used].max())
    if sigma is None:
        sigma = 0.01 * ((hi - lo) if hi > lo else max(abs(hi), 1.0))
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma!r}")
    x = _grid(grid, lo, hi, sigma)  # [G]
    density = smooth_spectrum(x, nodes, sigma, weights / num_probes)
    return SpectralDensity(x, density, nodes, weights, float(sigma), lo, hi, op.count, n,
                           time.perf_counter() - begin)
