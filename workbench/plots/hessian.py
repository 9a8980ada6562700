"""The Hessian claim's figure: the top-k eigenvalues of each model pooled over minibatches, and
per minibatch the log ratio the claim tests (``minibatch_log_ratio``, the one number this
module computes)."""
from __future__ import annotations

from typing import Any, Mapping

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator
import numpy as np
import torch


def _eig_rows(e) -> np.ndarray:
    """Eigenvalues as [minibatches, k] float64 (seeds, if stacked, become more minibatches)."""
    a = np.asarray(torch.as_tensor(e, dtype=torch.float64))
    return a.reshape(-1, a.shape[-1]) if a.ndim else a.reshape(1, 1)


def minibatch_log_ratio(base, other) -> np.ndarray:
    """[minibatches] per minibatch, the mean over the top k of log(|λ other| / |λ base|) (the
    statistic of ``findings.mff_flatter_hessian``); both [minibatches, k] on the same batches."""
    a, b = np.abs(_eig_rows(base)), np.abs(_eig_rows(other))
    if a.shape != b.shape:
        raise ValueError(f"eigenvalues of different shapes {a.shape} and {b.shape}")
    with np.errstate(divide="ignore"):  # a zero eigenvalue: an infinite ratio, not drawn
        return np.log(b / a).mean(axis=1)


def hessian_figure(spectra: Mapping[str, Any], bins: int = 40,
                   pair: tuple[str, str] | None = ("MAE", "MFF-MAE")):
    """Left: the top-k Hessian eigenvalues (``hessian_spectrum``: [minibatches, k] per model)
    pooled over minibatches, one density histogram per model on a shared axis, density
    log-scaled. Right (when both models of ``pair`` = (base, other) are in ``spectra``): per
    minibatch, the mean over the top k of log(|λ other| / |λ base|), the claim's statistic
    (``findings.mff_flatter_hessian``), with 0 (equal curvature) marked."""
    rows = {n: _eig_rows(e) for n, e in spectra.items()}
    both = pair is not None and all(p in rows for p in pair)
    fig, axes = plt.subplots(1, 2 if both else 1, figsize=(10, 3.6) if both else (5.5, 3.6),
                             squeeze=False, gridspec_kw={"width_ratios": [3, 2] if both else [1]})
    ax = axes[0, 0]
    lo = min(v.min() for v in rows.values())
    hi = max(v.max() for v in rows.values())
    edges = np.linspace(lo, hi if hi > lo else lo + 1, bins + 1)
    for name, v in rows.items():
        top = np.median(np.abs(v[:, 0]))  # as the claim's text: median |λ1| over minibatches
        ax.hist(v.ravel(), bins=edges, density=True, alpha=0.5, histtype="stepfilled",
                label=f"{name} ({v.shape[0]}×{v.shape[1]}, median |λ1| {top:.3g})")
    shapes = {v.shape for v in rows.values()}
    ks = "/".join(sorted({str(s[1]) for s in shapes}))
    batches = "/".join(sorted({str(s[0]) for s in shapes}))
    ax.set_yscale("log"), ax.set_xlabel("Hessian eigenvalue (top-k of each minibatch, signed)")
    ax.set_ylabel("density"), ax.legend(fontsize=7)
    ax.set_title(f"top-{ks} Hessian eigenvalues, pooled over {batches} minibatches", fontsize=10)
    if both:
        _log_ratio_panel(axes[0, 1], rows[pair[0]], rows[pair[1]], *pair)
    fig.tight_layout()
    return fig


def _log_ratio_panel(ax, base: np.ndarray, other: np.ndarray, base_name: str, other_name: str):
    """The right panel of :func:`hessian_figure`: :func:`minibatch_log_ratio` per minibatch."""
    ratio = minibatch_log_ratio(base, other)  # [minibatches]
    ax.plot(np.arange(len(ratio)), ratio, "o", color="C2", label="one minibatch")
    ax.axhline(0.0, color="k", lw=0.8, label="0: equal curvature")
    ax.set_xlabel("minibatch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # minibatches are whole
    ax.set_ylabel(f"mean log(|λ {other_name}| / |λ {base_name}|)\nover the top {base.shape[1]}",
                  fontsize=8)
    ax.set_title(f"per minibatch (< 0: {other_name} flatter)", fontsize=10)
    ax.legend(fontsize=7)
