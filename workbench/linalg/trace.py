"""Hutchinson's estimate of the Hessian trace, with a confidence interval.

``tr H = E[zᵀHz]`` for Rademacher ``z`` (Hutchinson 1989; Avron & Toledo 2011). One HVP per
probe; the probes are independent, so a t interval over the per-probe values is an honest
confidence interval for the trace. For a diagonal Hessian every probe gives the exact trace; in
general a probe's variance is ``2 Σ_{i≠j} H_ij²``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import scipy.stats
import torch

from ..core.results import AsDict
from .checks import as_param_list, positive_int
from .hvp import AnnouncedHVPOperator


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


def rademacher(n: int, generator: torch.Generator, device, dtype: torch.dtype) -> torch.Tensor:
    """A random ±1 vector [n] (drawn on the CPU from ``generator``, then moved)."""
    return (torch.randint(0, 2, (n,), generator=generator) * 2 - 1).to(device, dtype)


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
    num_samples = positive_int("num_samples", num_samples)
    min_samples = positive_int("min_samples", min_samples)
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be in (0, 1), got {ci!r}")
    if rtol is not None and not rtol > 0:
        raise ValueError(f"rtol must be > 0 or None, got {rtol!r}")
    params = as_param_list(params)
    begin = time.perf_counter()
    op = AnnouncedHVPOperator(loss_fn, params, "hessian_trace", num_samples)  # says a long cost
    n, device, dtype = op.numel, params[0].device, params[0].dtype
    gen = torch.Generator().manual_seed(int(seed))
    values, stopped = [], False
    for s in range(num_samples):
        z = rademacher(n, gen, device, dtype)  # [n]
        values.append(float(torch.dot(z.double(), op(z).double())))
        if rtol is not None and s + 1 >= max(min_samples, 2) and s + 1 < num_samples:
            low, high = _t_interval(np.asarray(values), ci)
            if 0.5 * (high - low) <= rtol * abs(np.mean(values)):
                stopped = True
                break
    samples = np.asarray(values, dtype=np.float64)  # [s]
    return TraceEstimate(float(samples.mean()), _t_interval(samples, ci), float(ci), op.count,
                         samples, n, stopped, time.perf_counter() - begin)
