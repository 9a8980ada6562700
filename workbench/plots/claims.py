"""The claims' forest plot: each claim's effect and 95 % interval on its own scale, coloured by
verdict (:data:`VERDICT_COLORS`)."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np

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
        sizes = ", ".join(f"{k} {v}" for k, v in c["sizes"].items()) or "not measured"
        ax.set_yticks([])
        if not np.isfinite(effect):  # no numbers: no scale either
            ax.set_xticks([])
        ax.set_title(f"{c['source']}: {c['claim']}  —  {c['verdict']} ({sizes})", fontsize=8,
                     loc="left", color=color)
        ax.tick_params(axis="x", labelsize=7)
        ax.set_xlabel(c["effect_name"], fontsize=7, labelpad=1)
    fig.suptitle(title or "claims: effect ± 95% interval (shaded: the paper's direction)",
                 fontsize=10)
    fig.tight_layout()
    return fig
