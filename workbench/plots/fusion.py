"""MFF's fusion weights over pretraining: the paper's figure (matplotlib) and an interactive
view (plotly)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from .common import layer_colors


def fusion_weights_figure(history, title: str = "MFF fusion weights during pretraining"):
    """MFF's Figure: normalised weight of each fused layer against training step (left) and the
    final weights as bars from 0 (right, each bar labelled with its value). Both panels mark the
    uniform start 1/L as a labelled line. ``history`` is a ``probes.fusion_history`` result."""
    steps = np.asarray(history.steps)
    w = np.asarray(history.weights)  # [T, L]
    colors = layer_colors(len(history.layers))
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
        r, g, b, _ = layer_colors(len(history.layers))[j]
        fig.add_trace(go.Scatter(x=np.asarray(history.steps).tolist(), y=w[:, j].tolist(),
                                 mode="lines", name=f"block {layer}",
                                 line=dict(color=f"rgb({r * 255:.0f},{g * 255:.0f},{b * 255:.0f})"),
                                 hovertemplate="step %{x}<br>weight %{y:.4f}<extra>block "
                                               f"{layer}</extra>"))
    fig.update_layout(title=title, xaxis_title="training step", yaxis_title="normalised weight",
                      template="plotly_white", width=820, height=420)
    return fig
