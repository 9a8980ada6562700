"""Linear algebra on implicit matrices: Hessian-vector products, Lanczos, trace and spectral
density. Knows nothing of models beyond a loss function and its parameters (imports only
``workbench.core``, torch, numpy and scipy).

* :mod:`.hvp` -- :class:`HVPOperator` (``v ↦ Hv`` by double backward), :func:`math_attention`
* :mod:`.lanczos` -- :class:`Lanczos`, the one (block, restartable, reorthogonalised) Lanczos
  iteration; :func:`lanczos_run`, :func:`lanczos_tridiagonal`
* :mod:`.topk` -- :func:`top_eigenpairs`, the top-k eigenvalues by thick-restart block Lanczos;
  :class:`HessianResult`, :func:`lanczos_sizes`, :func:`check_lanczos_fits`
* :mod:`.trace` -- :func:`hessian_trace`, Hutchinson's estimator with a t interval
* :mod:`.density` -- :func:`hessian_density`, stochastic Lanczos quadrature;
  :func:`smooth_spectrum`
* :mod:`.exact` -- :func:`exact_hessian`, the dense oracle the others are checked against
* :mod:`.checks` -- :func:`positive_int`, :func:`as_param_list`
"""
from __future__ import annotations

from .checks import as_param_list, positive_int
from .density import SpectralDensity, hessian_density, lanczos_quadrature, smooth_spectrum
from .exact import exact_hessian
from .hvp import AnnouncedHVPOperator, HVPOperator, math_attention
from .lanczos import Lanczos, lanczos_run, lanczos_tridiagonal
from .topk import (HessianResult, check_lanczos_fits, lanczos_sizes, top_eigenpairs,
                   warn_below_resolution)
from .trace import TraceEstimate, hessian_trace, rademacher

__all__ = [
    "as_param_list", "positive_int",
    "HVPOperator", "AnnouncedHVPOperator", "math_attention",
    "Lanczos", "lanczos_run", "lanczos_tridiagonal",
    "HessianResult", "top_eigenpairs", "lanczos_sizes", "check_lanczos_fits",
    "warn_below_resolution",
    "hessian_trace", "TraceEstimate", "rademacher",
    "hessian_density", "SpectralDensity", "smooth_spectrum", "lanczos_quadrature",
    "exact_hessian",
]
