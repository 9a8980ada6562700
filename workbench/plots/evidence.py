"""Figures of the evidence profile: every seed's learning curves, fusion trajectories against
the supervised contrast, and frequency curves against the initialisation control. Each takes the
plain numbers the evidence jobs saved (lists and dicts), so ``analysis/evidence.py
--report-only`` redraws them from the committed job files alone."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np

LABELS = {"mae": "MAE", "mff": "MFF-MAE"}


def learning_curves_figure(curves: Mapping[str, Sequence[Sequence[Mapping[str, float]]]],
                           seeds: Sequence[int]):
    """Per kind, per seed: training loss, and the feature monitor's held-out linear-probe and
    kNN accuracy, against step. ``curves[kind][i]``: the logged records of seed ``seeds[i]``
    (``step``, ``loss``, ``probe_acc``, ``knn_acc``); a stuck run is a flat monitor curve."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    styles = {"mae": "-", "mff": "--"}
    for k, (kind, per_seed) in enumerate(curves.items()):
        for i, (seed, rows) in enumerate(zip(seeds, per_seed)):
            color, label = f"C{i}", f"{LABELS.get(kind, kind)} seed {seed}"
            loss = [(r["step"], r["loss"]) for r in rows if "loss" in r]
            axes[0].plot(*zip(*loss), ls=styles.get(kind, "-"), color=color, label=label)
            for ax, key in ((axes[1], "probe_acc"), (axes[2], "knn_acc")):
                points = [(r["step"], 100 * r[key]) for r in rows if key in r]
                if points:
                    ax.plot(*zip(*points), marker="o", ms=3, ls=styles.get(kind, "-"),
                            color=color, label=label)
    axes[0].set_yscale("log"), axes[0].set_ylabel("training loss (masked patches)")
    axes[1].set_ylabel("monitor: linear probe (%)"), axes[2].set_ylabel("monitor: kNN (%)")
    for ax in axes:
        ax.set_xlabel("training step")
    axes[1].legend(fontsize=6, ncol=2)
    fig.suptitle("learning curves, every seed (solid MAE, dashed MFF-MAE)", fontsize=10)
    fig.tight_layout()
    return fig


def fusion_trajectories_figure(mff: Sequence[Any], supervised: Sequence[Any],
                               seeds: Sequence[int]):
    """The fusion's weighted depth (0 first layer, 1 last) against step, every seed, under MFF
    pretraining (solid) and under the supervised objective (dashed): the contrast the fusion
    claim tests. ``mff`` / ``supervised``: ``FusionHistory`` objects, one per seed."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for i, seed in enumerate(seeds):
        for hist, style, what in ((mff[i], "-", "MFF pretraining"),
                                  (supervised[i], "--", "supervised")):
            ax.plot(hist.steps, hist.weighted_depth(), ls=style,
                    color=f"C{i}", label=f"{what}, seed {seed}")
    ax.set_xlabel("training step"), ax.set_ylabel("weighted depth of the fusion")
    ax.set_title("fusion trajectories (lower = toward shallow layers)", fontsize=10)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig


def frequency_seeds_figure(trained: Mapping[str, Sequence[Any]], init: Mapping[str, Sequence[Any]],
                           seeds: Sequence[int]):
    """Δ log amplitude at the highest frequency against normalised depth, a line per seed:
    trained (solid) and the same seed at initialisation (dashed), a panel per kind.
    ``trained[kind]`` / ``init[kind]``: ``FrequencyResponse`` objects, one per seed."""
    fig, axes = plt.subplots(1, len(trained), figsize=(5.2 * len(trained), 3.6), squeeze=False)
    for ax, (kind, responses) in zip(axes[0], trained.items()):
        for i, seed in enumerate(seeds):
            for r, style, what in ((responses[i], "-", "trained"), (init[kind][i], "--", "init")):
                rows = r.block_rows
                ax.plot(np.asarray(r.depth)[rows], np.asarray(r.high_frequency)[rows],
                        ls=style, marker="o", ms=3, color=f"C{i}", label=f"{what}, seed {seed}")
        ax.set_title(f"{LABELS.get(kind, kind)}: highest frequency by depth", fontsize=10)
        ax.set_xlabel("normalised depth"), ax.set_ylabel("Δ log amplitude at the highest frequency")
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig
