"""Figures of the curvature probes (matplotlib): Hessian eigenvalue densities (SLQ), Hutchinson
trace estimates with confidence intervals, and filter-normalised loss-landscape slices.

Like the other figures of :mod:`workbench.plots`, these draw numbers the probes return and
compute nothing of their own; each returns a figure (save it with
``workbench.plots.save_figure``).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np

from .common import nonempty


def density_figure(densities: Mapping[str, Any], floor: float = 1e-6,
                   title: str = "Hessian eigenvalue density (SLQ)"):
    """One curve per model (``{"MAE": SpectralDensity, "MFF-MAE": ...}``) on a shared axis,
    density log-scaled; values below ``floor · max`` are clipped off the axis (the Gaussian
    tails fall to ~0). Dashed vertical lines mark each model's largest Ritz value."""
    densities = nonempty(densities, "densities")
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    top = max(float(np.max(d.density)) for d in densities.values())
    for i, (name, d) in enumerate(densities.items()):
        color = f"C{i}"
        ax.plot(d.grid, d.density, color=color, label=f"{name} (λmax ≈ {d.ritz_max:.3g})")
        ax.axvline(d.ritz_max, color=color, ls="--", lw=0.8)
    ax.set_yscale("log")
    ax.set_ylim(bottom=top * floor, top=top * 2)
    ax.set_xlabel("Hessian eigenvalue"), ax.set_ylabel("density")
    ax.legend(fontsize=8), ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def trace_figure(traces: Mapping[str, Any], title: str = "Hessian trace (Hutchinson)"):
    """Trace estimates with their confidence intervals as error bars: per model either one
    ``TraceEstimate`` (one point) or a sequence of them (e.g. one per minibatch: points along
    x, each model's points offset slightly so the bars do not overlap). With one estimate per
    model the models are placed along x by name."""
    traces = nonempty(traces, "trace estimates")
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    single = all(not isinstance(e, Sequence) for e in traces.values())
    width = 0.0 if single else 0.25 / len(traces)
    for i, (name, est) in enumerate(traces.items()):
        items = [est] if not isinstance(est, Sequence) else list(est)
        y = np.array([e.estimate for e in items])  # [k]
        low = np.array([e.ci[0] for e in items])
        high = np.array([e.ci[1] for e in items])
        x = np.full(1, float(i)) if single else \
            np.arange(len(items)) + (i - (len(traces) - 1) / 2) * width
        ax.errorbar(x, y, yerr=np.stack([y - low, high - y]), fmt="o", capsize=3,
                    label=f"{name} ({items[0].ci_level:.0%} CI)")
    if single:  # one estimate per model: the models along x
        ax.set_xticks(range(len(traces)), list(traces)), ax.set_xlim(-0.5, len(traces) - 0.5)
    else:
        ax.set_xlabel("minibatch")
    ax.set_ylabel("tr H"), ax.legend(fontsize=8), ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def landscape_figure(landscapes: Mapping[str, Any], levels: int = 20,
                     title: str = "Loss landscape (filter-normalised)"):
    """1-D slices: one curve per model on a shared axis. 2-D slices: one contour panel per
    model with shared contour levels (so the panels compare), the weights marked at (0, 0)."""
    landscapes = nonempty(landscapes, "landscapes")
    dims = {ls.ndim for ls in landscapes.values()}
    if len(dims) != 1:
        raise ValueError("cannot mix 1-D and 2-D landscapes in one figure")
    if dims == {1}:
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        for name, ls in landscapes.items():
            ax.plot(ls.alphas, ls.losses, label=name)
        ax.set_xlabel("α"), ax.set_ylabel("loss"), ax.legend(fontsize=8)
        ax.set_title(title, fontsize=10)
        fig.tight_layout()
        return fig
    k = len(landscapes)
    fig, axes = plt.subplots(1, k, figsize=(4.2 * k + 1.0, 3.8), squeeze=False,
                             layout="constrained")
    lo = min(float(np.min(ls.losses)) for ls in landscapes.values())
    hi = max(float(np.max(ls.losses)) for ls in landscapes.values())
    ticks = np.linspace(lo, hi if hi > lo else lo + 1.0, levels)
    for ax, (name, ls) in zip(axes[0], landscapes.items()):
        # contour wants Z[y, x]: rows follow betas, so transpose losses[alpha, beta]
        cs = ax.contour(ls.alphas, ls.betas, ls.losses.T, levels=ticks, cmap="viridis")
        ax.plot([0], [0], "k+", ms=8)
        ax.set_xlabel("α"), ax.set_ylabel("β"), ax.set_title(name, fontsize=10)
        ax.set_aspect("equal")
    fig.colorbar(cs, ax=axes[0].tolist(), shrink=0.8, label="loss")
    fig.suptitle(title, fontsize=10)
    return fig
