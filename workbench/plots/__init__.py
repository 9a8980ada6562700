"""Paper-style figures (matplotlib) and interactive views (plotly) of probe results
(curvature figures: :mod:`.curvature`).

Plots draw numbers the probes return; they compute nothing of their own. ``save_figure`` writes
a figure as PNG + SVG (matplotlib) or HTML (plotly), with the numbers behind it as JSON.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from ..pictures import COLUMNS, image_hwc, stats_caption
from ..results import to_jsonable


def save_figure(fig: Any, out_dir: str | os.PathLike, name: str, data: Any = None) -> list[Path]:
    """Write ``fig`` into ``out_dir`` as ``name.png`` + ``name.svg`` (matplotlib) or
    ``name.html`` (plotly), plus ``name.json`` with ``data``; returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    if hasattr(fig, "savefig"):
        for ext in ("png", "svg"):
            paths.append(out / f"{name}.{ext}")
            fig.savefig(paths[-1], dpi=150, bbox_inches="tight")
    elif hasattr(fig, "write_html"):
        paths.append(out / f"{name}.html")
        fig.write_html(paths[-1], include_plotlyjs="cdn" if os.environ.get("PLOTLY_CDN") else True)
    else:
        raise TypeError(f"cannot save a {type(fig).__name__}: expected a matplotlib or plotly figure")
    if data is not None:
        paths.append(save_json(out, name, data))
    return paths


def save_json(out_dir: str | os.PathLike, name: str, data: Any) -> Path:
    """Write the numbers behind a figure (:func:`to_jsonable`) to ``out_dir/name.json``."""
    path = Path(out_dir) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_jsonable(data), indent=1))
    return path


def reconstruction_figure(results: Mapping[str, Any], indices: Sequence[int] | None = None,
                          title: str | None = None):
    """A matplotlib figure. Rows: images (and models); columns: original / masked /
    reconstruction / pasted (``workbench.pictures.compose_rows`` draws the same as pixels).

    ``results`` maps a model name (e.g. "MAE", "MFF-MAE") to a ``probes.reconstruct`` result.
    """
    names = list(results)
    first = results[names[0]]
    idx = list(range(first.original.shape[0])) if indices is None else list(indices)
    rows = [(i, n) for i in idx for n in names]
    fig, axes = plt.subplots(len(rows), len(COLUMNS), figsize=(2.0 * len(COLUMNS), 2.0 * len(rows)),
                             squeeze=False, layout="constrained")  # leaves room for the suptitle
    for r, (i, n) in enumerate(rows):
        res = results[n]
        for c, (field, label) in enumerate(COLUMNS):
            ax = axes[r, c]
            ax.imshow(image_hwc(getattr(res, field)[i]), interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(label, fontsize=9)
        masked = int(res.mask[i].sum())
        axes[r, 0].set_ylabel(f"{n}\n{masked}/{res.mask.shape[1]} masked", fontsize=8)
    note = stats_caption({n: r.stats for n, r in results.items()})
    fig.suptitle(f"{title}\n{note}" if title else note, fontsize=10 if title else 8)
    return fig


# ----------------------------------------------------------------------------- fusion weights
def _layer_colors(n: int, cmap: str = "plasma"):
    return [plt.get_cmap(cmap)(0.05 + 0.85 * i / max(1, n - 1)) for i in range(n)]


def fusion_weights_figure(history, title: str = "MFF fusion weights during pretraining"):
    """MFF's Figure: normalised weight of each fused layer against training step (left) and the
    final weights as bars (right). ``history`` is a ``probes.fusion_history`` result."""
    steps = np.asarray(history.steps)
    w = np.asarray(history.weights)  # [T, L]
    colors = _layer_colors(len(history.layers))
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [2, 1]})
    for j, layer in enumerate(history.layers):
        ax.plot(steps, w[:, j], color=colors[j], label=f"block {layer}")
    ax.axhline(1 / len(history.layers), color="grey", lw=0.8, ls=":", label="uniform start")
    ax.set_xlabel("training step"), ax.set_ylabel("normalised weight"), ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    bx.bar([str(layer) for layer in history.layers], w[-1], color=colors)
    uniform = 1 / len(history.layers)
    lo, hi = min(w[-1].min(), uniform), max(w[-1].max(), uniform)
    pad = max(0.15 * (hi - lo), 1e-3)
    bx.set_ylim(max(0.0, lo - pad), hi + pad)  # zoomed: small moves stay visible
    bx.axhline(uniform, color="grey", lw=0.8, ls=":")
    bx.set_xlabel("fused block"), bx.set_ylabel("final weight")
    bx.set_title(f"step {int(steps[-1])}", fontsize=10)
    fig.tight_layout()
    return fig


def fusion_weights_plotly(history, title: str = "MFF fusion weights during pretraining"):
    """Interactive version: hover shows step, layer and weight."""
    import plotly.graph_objects as go

    w = np.asarray(history.weights)
    fig = go.Figure()
    for j, layer in enumerate(history.layers):
        r, g, b, _ = _layer_colors(len(history.layers))[j]
        fig.add_trace(go.Scatter(x=np.asarray(history.steps).tolist(), y=w[:, j].tolist(),
                                 mode="lines", name=f"block {layer}",
                                 line=dict(color=f"rgb({r * 255:.0f},{g * 255:.0f},{b * 255:.0f})"),
                                 hovertemplate="step %{x}<br>weight %{y:.4f}<extra>block "
                                               f"{layer}</extra>"))
    fig.update_layout(title=title, xaxis_title="training step", yaxis_title="normalised weight",
                      template="plotly_white", width=820, height=420)
    return fig


# ----------------------------------------------------------------------------- Fourier
def frequency_figure(responses: Mapping[str, Any], title: str | None = None):
    """Park & Kim's Fourier figure for each model: Δ log amplitude over frequency, one curve per
    layer coloured by depth (plasma), then the highest-frequency value against depth, all models
    in one panel (MFF's fused tensor drawn as a star at depth 1)."""
    names = list(responses)
    fig, axes = plt.subplots(1, len(names) + 1, figsize=(4.2 * (len(names) + 1), 3.6))
    markers = ["o", "s", "^", "D"]
    for ax, name in zip(axes, names):
        r = responses[name]
        freqs = np.asarray(r.freqs)
        blocks = r.block_rows
        colors = _layer_colors(len(blocks))
        for c, i in zip(colors, blocks):
            ax.plot(freqs, np.asarray(r.curves[i]), color=c, lw=1.2)
        if r.fused_row is not None:
            ax.plot(freqs, np.asarray(r.curves[r.fused_row]), "k--", lw=1.2,
                    label="fused (decoder input)")
            ax.legend(fontsize=7)
        ax.set_xlabel("frequency (×π)"), ax.set_ylabel("Δ log amplitude")
        ax.set_title(f"{name}: early (dark) → late (bright)", fontsize=9)
    ax = axes[-1]
    for k, name in enumerate(names):
        r = responses[name]
        blocks = r.block_rows
        hf = np.asarray(r.high_frequency)
        ax.plot(np.asarray(r.depth)[blocks], hf[blocks], marker=markers[k % 4], label=name)
        if r.fused_row is not None:
            ax.plot([1.0], [hf[r.fused_row]], marker="*", ms=12, ls="",
                    color=ax.lines[-1].get_color(), label=f"{name} fused")
    ax.set_xlabel("normalised depth"), ax.set_ylabel(f"Δ log amplitude at {float(r.freqs[-1]):.2f}π")
    ax.set_title("high-frequency amplitude by depth", fontsize=9)
    ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def last_layer_spectrum_figure(responses: Mapping[str, Any]):
    """The last block's Δ log amplitude, one curve per model (MFF: less high frequency)."""
    fig, ax = plt.subplots(figsize=(4.5, 3.4))
    for name, r in responses.items():
        last = r.last_block_row
        ax.plot(np.asarray(r.freqs), np.asarray(r.curves[last]), marker=".", label=f"{name} ({r.names[last]})")
    ax.set_xlabel("frequency (×π)"), ax.set_ylabel("Δ log amplitude"), ax.legend(fontsize=8)
    ax.set_title("last encoder layer", fontsize=10)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- Hessian
def hessian_figure(spectra: Mapping[str, Any], bins: int = 40):
    """Distribution of the top Hessian eigenvalues over minibatches (Park & Kim / MFF style):
    one density histogram per model on a shared axis, density log-scaled."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    values = {n: np.asarray(torch.as_tensor(e, dtype=torch.float64).flatten()) for n, e in spectra.items()}
    lo = min(v.min() for v in values.values())
    hi = max(v.max() for v in values.values())
    edges = np.linspace(lo, hi if hi > lo else lo + 1, bins + 1)
    for name, v in values.items():
        ax.hist(v, bins=edges, density=True, alpha=0.5, label=f"{name} (max {v.max():.3g})",
                histtype="stepfilled")
    ax.set_yscale("log"), ax.set_xlabel("Hessian eigenvalue (top-k per minibatch)")
    ax.set_ylabel("density"), ax.legend(fontsize=8)
    ax.set_title("Hessian max-eigenvalue spectrum", fontsize=10)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- frozen features
def probe_scores_figure(scores: Mapping[str, Mapping[str, float]]):
    """Grouped bars: accuracy (%) of each probe (x) for each model (colour). ``scores`` maps a
    model name to {probe name: accuracy in [0, 1]} (``probes.probe_scores``), every model with
    the same probes."""
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    kinds = list(next(iter(scores.values())))
    for j, (name, s) in enumerate(scores.items()):
        ax.bar([i + 0.4 * j for i in range(len(kinds))], [100 * s[k] for k in kinds], width=0.4,
               label=name)
    ax.set_xticks([i + 0.2 for i in range(len(kinds))], kinds)
    ax.set_ylabel("accuracy (%)"), ax.legend()
    return fig


# ----------------------------------------------------------------------------- claims
VERDICT_COLORS = {"held": "#1a7f37", "not held": "#b42318", "inconclusive": "#6e7781"}


def forest_figure(claims: Sequence[Any], title: str | None = None):
    """One row per claim: the effect and its 95 % interval on the claim's own scale (effects are
    in different units), a line at 0, the side the paper predicts shaded, coloured by verdict.
    ``claims``: :class:`workbench.findings.Claim` objects or their dicts."""
    rows = [c if isinstance(c, Mapping) else c.to_dict() for c in claims]
    if not rows:
        raise ValueError("no claims to draw")
    fig, axes = plt.subplots(len(rows), 1, figsize=(9, 0.85 * len(rows) + 0.9), squeeze=False)
    for ax, c in zip(axes[:, 0], rows):
        lo, hi, effect = (float("nan") if x is None else float(x) for x in (*c["ci"], c["effect"]))
        finite = [v for v in (lo, hi, effect, 0.0) if np.isfinite(v)]
        span = max(max(abs(v) for v in finite), 1e-12) * 1.3
        ax.set_xlim(-span, span)
        side = (0, span) if c["direction"] == "greater" else (-span, 0)
        ax.axvspan(*side, color="#ddf4e4", zorder=0)  # the paper's side
        ax.axvline(0, color="k", lw=0.8)
        color = VERDICT_COLORS.get(c["verdict"], "k")
        if np.isfinite(lo) and np.isfinite(hi):
            ax.plot([lo, hi], [0, 0], color=color, lw=2.5)
        if np.isfinite(effect):
            ax.plot([effect], [0], "o", color=color, ms=7)
        sizes = ", ".join(f"{k} {v}" for k, v in c["sizes"].items())
        ax.set_yticks([])
        ax.set_title(f"{c['source']}: {c['claim']}  —  {c['verdict']} ({sizes})", fontsize=8,
                     loc="left", color=color)
        ax.tick_params(axis="x", labelsize=7)
        ax.set_xlabel(c["effect_name"], fontsize=7, labelpad=1)
    fig.suptitle(title or "claims: effect ± 95% interval (shaded: the paper's direction)",
                 fontsize=10)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- mask-ratio sweep
def mask_ratio_sweep_figure(ratios: Sequence[float], losses: Mapping[str, Sequence[float]],
                            accuracies: Mapping[str, Sequence[float]] | None = None):
    """MAE Fig. 5 style: held-out reconstruction loss (and probe accuracy) against mask ratio."""
    panels = 2 if accuracies else 1
    fig, axes = plt.subplots(1, panels, figsize=(4.5 * panels, 3.4), squeeze=False)
    for name, v in losses.items():
        axes[0, 0].plot(ratios, v, marker="o", label=name)
    axes[0, 0].set_xlabel("mask ratio"), axes[0, 0].set_ylabel("held-out masked loss")
    axes[0, 0].legend(fontsize=8)
    if accuracies:
        for name, v in accuracies.items():
            axes[0, 1].plot(ratios, np.asarray(v) * 100, marker="o", label=name)
        axes[0, 1].set_xlabel("mask ratio"), axes[0, 1].set_ylabel("linear probe accuracy (%)")
        axes[0, 1].legend(fontsize=8)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- curvature
from .curvature import density_figure, landscape_figure, trace_figure  # noqa: E402,F401
