"""A probe over training (``probes.over_training``) against the step: log steps, seeds as bands;
and one step's probe results side by side (the training-dynamics explorer's panel)."""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np

from .common import layer_colors

LINESTYLES = ("-", "--", ":", "-.")  # one per run group (e.g. MAE, MFF-MAE)


def as_groups(runs) -> dict[str, list]:
    """One result, a list of seeds, or {label: result or seeds} -> {label: [results]}."""
    if isinstance(runs, Mapping):
        return {str(k): list(v) if isinstance(v, (list, tuple)) else [v] for k, v in runs.items()}
    seeds = list(runs) if isinstance(runs, (list, tuple)) else [runs]
    if not seeds:
        raise ValueError("no over-training results to draw")
    return {seeds[0].probe: seeds}


def seed_band(seeds: Sequence, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps [T], mean [T], [2, T] min and max) of ``name`` over the seeds, on the steps all
    of them measured."""
    common = sorted(set.intersection(*(set(r.steps) for r in seeds)))
    rows = np.stack([[r.series(name)[r.steps.index(s)] for s in common] for r in seeds])  # [S, T]
    return np.asarray(common), rows.mean(axis=0), np.stack([rows.min(axis=0), rows.max(axis=0)])


def over_training_figure(runs, names: Sequence[str] | None = None, title: str | None = None,
                         ylabel: str | None = None):
    """The headline numbers ``names`` (default: all of the first result's) of an
    :class:`~workbench.probes.OverTraining` against the training step, on a symmetric-log step
    axis (step 0, the initialisation, included). ``runs``: one result, a list of seeds (drawn
    as their mean with a min-max band) or {label: result or seeds} (one line style each)."""
    groups = as_groups(runs)
    first = next(iter(groups.values()))[0]
    names = list(names or first.names)
    colors = layer_colors(len(names)) if len(names) > 1 else [(0.2, 0.3, 0.6, 1.0)]
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for g, (label, seeds) in enumerate(groups.items()):
        for j, name in enumerate(names):
            steps, mean, (low, high) = seed_band(seeds, name)
            tag = name if len(groups) == 1 else f"{label}: {name}"
            if len(seeds) > 1:
                tag += f" (mean, min-max of {len(seeds)} seeds)"
                ax.fill_between(steps, low, high, color=colors[j], alpha=0.2, lw=0)
            ax.plot(steps, mean, LINESTYLES[g % len(LINESTYLES)], color=colors[j], marker=".",
                    label=tag)
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlim(left=0)
    ax.set_xlabel("training step (log; 0 = initialisation)")
    ax.set_ylabel(ylabel or (names[0] if len(names) == 1 else first.probe))
    ax.set_title(title or f"{first.probe} over training", fontsize=10)
    ax.legend(fontsize=7, ncol=2 if len(names) * len(groups) > 6 else 1)
    fig.tight_layout()
    return fig


def snapshot_figure(step: int, results: Mapping[str, Mapping[str, dict]]):
    """The probes' full results at one training ``step``, models side by side. ``results``:
    {probe: {model label: that probe's result at the step}} with the probes (each optional)
    "frequency" (Δ log amplitude per layer over frequency, one panel per model, coloured by
    depth), "fusion" (MFF's normalised weight per fused block) and "attention_distance" (mean
    attention distance per block, averaged over heads)."""
    freq = dict(results.get("frequency", {}))
    fusion = dict(results.get("fusion", {}))
    attention = dict(results.get("attention_distance", {}))
    n = len(freq) + bool(fusion) + bool(attention)
    if n == 0:
        raise ValueError("no probe results to draw at this step")
    fig, axes = plt.subplots(1, n, figsize=(3.1 * n, 2.7), squeeze=False)
    axes = list(axes[0])
    for label, r in freq.items():
        ax, curves = axes.pop(0), np.asarray(r["curves"], dtype=float)  # [L, F]
        for row, color in zip(curves, layer_colors(len(curves))):
            ax.plot(np.asarray(r["freqs_pi"], dtype=float), row, color=color, lw=1)
        ax.set(title=f"{label}: Δ log amplitude", xlabel="frequency (×π)")
    if fusion:
        ax = axes.pop(0)
        for g, (label, r) in enumerate(fusion.items()):
            ax.bar(np.arange(len(r["weights"])) + 0.8 * g / len(fusion), r["weights"],
                   width=0.8 / len(fusion), label=label)
            ax.set_xticks(np.arange(len(r["layers"])), [str(x) for x in r["layers"]])
        top = max(max(r["weights"]) for r in fusion.values())
        ax.set(title="fusion weights", xlabel="fused block", ylim=(0, min(1.0, 1.5 * top)))
    if attention:
        ax = axes.pop(0)
        for g, (label, r) in enumerate(attention.items()):
            dist = np.asarray(r["distance_px"], dtype=float).mean(axis=1)  # [L] over heads
            ax.plot(np.arange(len(dist)), dist, LINESTYLES[g % len(LINESTYLES)], marker=".",
                    label=label)
        ax.set(title="attention distance", xlabel="block", ylabel="pixels")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=7)
    fig.suptitle(f"training step {step}", fontsize=10)
    fig.tight_layout()
    return fig
