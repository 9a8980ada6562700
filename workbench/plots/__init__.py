"""Paper-style figures (matplotlib) and interactive views (plotly) of probe results
(curvature figures: :mod:`.curvature`; representation figures: :mod:`.representations`).

Plots draw numbers the probes return; they compute nothing of their own beyond what a panel
states it shows (the Hessian claim's per-minibatch log ratio, Wilson intervals of probe
accuracies: ``minibatch_log_ratio``, ``wilson_interval``). ``save_figure`` writes
a figure as PNG + SVG (matplotlib) or HTML (plotly), with the numbers behind it as JSON.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
from matplotlib.lines import Line2D
import numpy as np
import torch

from ..core.pictures import COLUMNS, image_hwc, stats_caption
from ..core.results import to_jsonable


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
    reconstruction / pasted (``workbench.core.pictures.compose_rows`` draws the same as pixels).

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
    final weights as bars from 0 (right, each bar labelled with its value). Both panels mark the
    uniform start 1/L as a labelled line. ``history`` is a ``probes.fusion_history`` result."""
    steps = np.asarray(history.steps)
    w = np.asarray(history.weights)  # [T, L]
    colors = _layer_colors(len(history.layers))
    uniform = 1 / len(history.layers)
    start = f"uniform start 1/{len(history.layers)} = {uniform:.3g}"
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [2, 1]})
    for j, layer in enumerate(history.layers):
        ax.plot(steps, w[:, j], color=colors[j], label=f"block {layer}")
    ax.axhline(uniform, color="grey", lw=0.8, ls=":", label=start)
    ax.set_xlabel("training step"), ax.set_title(title, fontsize=10)
    ax.set_ylabel("normalised weight (sums to 1)")
    ax.legend(fontsize=7, ncol=2)
    bars = bx.bar([str(layer) for layer in history.layers], w[-1], color=colors)
    bx.bar_label(bars, fmt="%.3f", fontsize=6)  # small moves from 1/L stay readable
    bx.axhline(uniform, color="grey", lw=0.8, ls=":", label=start)
    bx.set_ylim(0, 1.35 * max(float(w[-1].max()), uniform))  # bars start at 0; legend room
    bx.set_xlabel("fused block"), bx.set_ylabel("final weight (sums to 1)")
    bx.set_title(f"step {int(steps[-1])}", fontsize=10), bx.legend(fontsize=7, loc="upper left")
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
SUBLAYER_STYLES = {None: "-", "attn": "-", "mlp": "--"}  # attention solid, MLP dashed


def _block_and_sublayer(name: str, row: int) -> tuple[int, str | None]:
    """("block 3 mlp", _) -> (3, "mlp"); ("block 3", _) -> (3, None); unparsed: (row, None)."""
    parts = name.split()
    try:
        return int(parts[1]), (parts[2] if len(parts) > 2 else None)
    except (IndexError, ValueError):
        return row, None


def _depth_colorbar(fig, ax, blocks: Sequence[int], colors):
    """A discrete colourbar of the depth colours: one colour per block index, shallow first."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import BoundaryNorm, ListedColormap

    norm = BoundaryNorm(np.arange(len(blocks) + 1) - 0.5, len(blocks))
    cb = fig.colorbar(ScalarMappable(norm=norm, cmap=ListedColormap(colors)), ax=ax,
                      ticks=range(len(blocks)), pad=0.02)
    cb.ax.set_yticklabels([str(b) for b in blocks], fontsize=7)
    cb.set_label("depth (block index)", fontsize=8)
    return cb


def _frequency_panel(fig, ax, name: str, r) -> None:
    """One model's curves: colour = block (depth colourbar), line style = sub-block."""
    freqs = np.asarray(r.freqs)
    parsed = [_block_and_sublayer(r.names[i], i) for i in r.block_rows]
    blocks = sorted({b for b, _ in parsed})
    colors = _layer_colors(len(blocks))
    for i, (b, sub) in zip(r.block_rows, parsed):
        ax.plot(freqs, np.asarray(r.curves[i]), color=colors[blocks.index(b)], lw=1.2,
                ls=SUBLAYER_STYLES.get(sub, "-"))
    handles = []
    if any(sub is not None for _, sub in parsed):  # two entries, not one per curve
        handles += [Line2D([], [], color="grey", ls="-", label="after attention"),
                    Line2D([], [], color="grey", ls="--", label="after MLP")]
    if r.fused_row is not None:
        handles += ax.plot(freqs, np.asarray(r.curves[r.fused_row]), color="k", ls=":", lw=1.8,
                           label="fused (decoder input)")
    if handles:
        ax.legend(handles=handles, fontsize=7)
    ax.set_xlabel("frequency (×π)"), ax.set_ylabel("Δ log amplitude")
    ax.set_title(name, fontsize=9)
    _depth_colorbar(fig, ax, blocks, colors)


def frequency_figure(responses: Mapping[str, Any], title: str | None = None):
    """Park & Kim's Fourier figure for each model: Δ log amplitude over frequency, one curve per
    layer coloured by depth (plasma, with a block-index colourbar; with sublayers, attention
    solid and MLP dashed), then the highest-frequency value against depth, all models in one
    panel (MFF's fused tensor drawn as a star at depth 1; with sublayers MLP points hollow)."""
    names = list(responses)
    fig, axes = plt.subplots(1, len(names) + 1, figsize=(4.6 * (len(names) + 1), 3.6))
    markers = ["o", "s", "^", "D"]
    for ax, name in zip(axes, names):
        _frequency_panel(fig, ax, name, responses[name])
    ax = axes[-1]
    for k, name in enumerate(names):
        r = responses[name]
        blocks = r.block_rows
        hf, depth = np.asarray(r.high_frequency), np.asarray(r.depth)
        line, = ax.plot(depth[blocks], hf[blocks], marker=markers[k % 4], label=name)
        mlp = [i for i in blocks if _block_and_sublayer(r.names[i], i)[1] == "mlp"]
        if mlp:
            ax.plot(depth[mlp], hf[mlp], marker=markers[k % 4], ls="", mfc="white",
                    color=line.get_color())
        if r.fused_row is not None:
            ax.plot([1.0], [hf[r.fused_row]], marker="*", ms=12, ls="",
                    color=line.get_color(), label=f"{name} fused")
    ax.set_xlabel("normalised depth"), ax.set_ylabel(f"Δ log amplitude at {float(r.freqs[-1]):.2f}π")
    hollow = any(_block_and_sublayer(n, 0)[1] for r in responses.values() for n in r.names)
    ax.set_title("high-frequency amplitude by depth" + (" (hollow: after MLP)" if hollow else ""),
                 fontsize=9)
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
    ratio = minibatch_log_ratio(base, other)  # [minibatches]
    ax.plot(np.arange(len(ratio)), ratio, "o", color="C2", label="one minibatch")
    ax.axhline(0.0, color="k", lw=0.8, label="0: equal curvature")
    ax.set_xlabel("minibatch")
    ax.set_ylabel(f"mean log(|λ {other_name}| / |λ {base_name}|)\nover the top {base.shape[1]}",
                  fontsize=8)
    ax.set_title(f"per minibatch (< 0: {other_name} flatter)", fontsize=10)
    ax.legend(fontsize=7)


# ----------------------------------------------------------------------------- frozen features
def wilson_interval(accuracy: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of an accuracy measured on ``n`` items (correct = round(acc·n)),
    in [0, 1] (``scipy.stats.binomtest(...).proportion_ci(method="wilson")``)."""
    from scipy.stats import binomtest

    ci = binomtest(int(round(accuracy * n)), n).proportion_ci(level, method="wilson")
    return float(ci.low), float(ci.high)


def wilson_errors(accuracies: Sequence[float], n: int) -> np.ndarray:
    """[2, k] distances (in %) below / above each accuracy (in [0, 1]) to its 95 % Wilson
    interval on ``n`` items: matplotlib's ``yerr`` for bars / points drawn in %."""
    ci = np.array([wilson_interval(a, n) for a in accuracies]).T * 100  # [2, k]
    return np.abs(ci - 100 * np.asarray(accuracies, dtype=float))


def probe_scores_figure(scores: Mapping[str, Mapping[str, float]], n_test: int | None = None,
                        n_classes: int | None = None,
                        baselines: Mapping[str, float] | None = None):
    """Grouped bars: accuracy (%) of each probe (x) for each model (colour). ``scores`` maps a
    model name to {probe name: accuracy in [0, 1]} (``probes.probe_scores``), every model with
    the same probes (the controls -- the models at initialisation -- are models like the
    others). With ``n_test`` (test images): 95 % Wilson intervals as error bars and n in the
    title; with ``n_classes``: a labelled chance line at 100/C %; ``baselines``: {name:
    accuracy} drawn as labelled dotted lines (e.g. the raw-pixel probe)."""
    fig, ax = plt.subplots(figsize=(6.2, 3.6))
    kinds = list(next(iter(scores.values())))
    width = 0.8 / len(scores)
    for j, (name, s) in enumerate(scores.items()):
        x = [i + width * j for i in range(len(kinds))]
        acc = [100 * s[k] for k in kinds]
        ax.bar(x, acc, width=width, label=name, hatch="//" if "init" in name else None,
               alpha=0.6 if "init" in name else 1.0)
        if n_test:
            ax.errorbar(x, acc, yerr=wilson_errors([s[k] for k in kinds], n_test), fmt="none",
                        ecolor="k", capsize=3, lw=1)
    if n_classes:
        ax.axhline(100 / n_classes, color="grey", ls="--", lw=1,
                   label=f"chance 1/{n_classes} = {100 / n_classes:.3g} %")
    for m, (name, acc) in enumerate((baselines or {}).items()):
        ax.axhline(100 * acc, color=f"C{len(scores) + m}", ls=":", lw=1.5,
                   label=f"{name} {100 * acc:.1f} %")
    ax.set_xticks([i + width * (len(scores) - 1) / 2 for i in range(len(kinds))], kinds)
    ax.set_ylabel("accuracy (%)"), ax.set_ylim(0, 100), ax.legend(fontsize=7)
    if n_test:
        ax.set_title(f"n = {n_test} test images; error bars: 95 % Wilson interval", fontsize=9)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- claims
VERDICT_COLORS = {"held": "#1a7f37", "not held": "#b42318", "no effect": "#0969da",
                  "inconclusive": "#6e7781", "not testable": "#afb8c1"}


def forest_figure(claims: Sequence[Any], title: str | None = None):
    """One row per claim: the effect and its 95 % interval on the claim's own scale (effects are
    in different units), a line at 0, the side the paper predicts shaded, ``±sesoi`` (the
    smallest effect of interest, when the claim has one) hatched, coloured by verdict
    (:data:`VERDICT_COLORS`: held, not held, no effect, inconclusive, not testable).
    ``claims``: :class:`workbench.experiments.findings.Claim` objects or their dicts."""
    rows = [c if isinstance(c, Mapping) else c.to_dict() for c in claims]
    if not rows:
        raise ValueError("no claims to draw")
    fig, axes = plt.subplots(len(rows), 1, figsize=(9, 0.85 * len(rows) + 0.9), squeeze=False)
    for ax, c in zip(axes[:, 0], rows):
        lo, hi, effect = (float("nan") if x is None else float(x) for x in (*c["ci"], c["effect"]))
        sesoi = c.get("sesoi")
        finite = [v for v in (lo, hi, effect, 0.0, sesoi or 0.0) if np.isfinite(v)]
        span = max(max(abs(v) for v in finite), 1e-12) * 1.3
        ax.set_xlim(-span, span)
        side = (0, span) if c["direction"] == "greater" else (-span, 0)
        ax.axvspan(*side, color="#ddf4e4", zorder=0)  # the paper's side
        if sesoi:  # effects too small to count
            ax.axvspan(-sesoi, sesoi, facecolor="none", edgecolor="#8c959f", hatch="///",
                       lw=0, zorder=0.5)
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

# ----------------------------------------------------------------------------- representations
from .representations import (attention_figure, cka_figure, knn_history_figure,  # noqa: E402,F401
                              layer_probe_figure)

# ----------------------------------------------------------------------------- evidence profile
from .evidence import (frequency_seeds_figure, fusion_trajectories_figure,  # noqa: E402,F401
                       learning_curves_figure)
