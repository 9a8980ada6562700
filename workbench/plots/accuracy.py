"""Accuracies and losses as bars and curves: frozen-feature probe scores with their 95 % Wilson
intervals (``wilson_interval``, ``wilson_errors``; the representation figures use them too),
MAE's mask-ratio sweep, and fine-tune top-1 against the blocks tuned and the share of labels."""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np


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


def mask_ratio_sweep_figure(ratios: Sequence[float], losses: Mapping[str, Sequence[float]],
                            accuracies: Mapping[str, Sequence[float]] | None = None,
                            n_test: int | None = None, init_accuracy: float | None = None):
    """MAE Fig. 5 style: held-out reconstruction loss (and probe accuracy) against mask ratio.
    With ``n_test`` (the probe's test images) each accuracy carries its 95 % Wilson interval;
    ``init_accuracy`` draws the same probe on the initialisation as a dashed line."""
    panels = 2 if accuracies else 1
    fig, axes = plt.subplots(1, panels, figsize=(4.5 * panels, 3.4), squeeze=False)
    for name, v in losses.items():
        axes[0, 0].plot(ratios, v, marker="o", label=name)
    axes[0, 0].set_xlabel("mask ratio"), axes[0, 0].set_ylabel("held-out masked loss")
    axes[0, 0].legend(fontsize=8)
    if accuracies:
        ax = axes[0, 1]
        for name, v in accuracies.items():
            yerr = wilson_errors(v, n_test) if n_test else None
            ax.errorbar(ratios, np.asarray(v) * 100, yerr=yerr, marker="o", capsize=3,
                        label=name + (f" (95 % CI, n = {n_test})" if n_test else ""))
        if init_accuracy is not None:
            ax.axhline(100 * init_accuracy, color="0.5", ls="--", lw=1, label="at initialisation")
        ax.set_xlabel("mask ratio"), ax.set_ylabel("linear probe accuracy (%)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def finetune_series_figure(tune_blocks: Sequence[int | str], by_blocks: Mapping[str, Sequence[float]],
                           label_fractions: Sequence[float],
                           by_fraction: Mapping[str, Sequence[float]], depth: int,
                           n_test: int | None = None, n_classes: int | None = None):
    """MAE Fig. 9 and MFF's few-shot table side by side: held-out top-1 (%) of each model
    (colour) against the blocks fine-tuned (the last k; "all" drawn at ``depth``) and against
    the share of labels it was fine-tuned on (log axis, every block tuned). ``by_blocks`` /
    ``by_fraction``: {model: top-1 in [0, 1] per k / per fraction}. With ``n_test`` (held-out
    images): 95 % Wilson intervals; with ``n_classes``: a chance line."""
    ks = [depth if k == "all" else int(k) for k in tune_blocks]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    panels = ((axes[0], ks, by_blocks), (axes[1], [100 * f for f in label_fractions], by_fraction))
    for ax, x, curves in panels:
        for name, acc in curves.items():
            yerr = wilson_errors(acc, n_test) if n_test else None
            ax.errorbar(x, 100 * np.asarray(acc, dtype=float), yerr=yerr, marker="o", capsize=3,
                        label=name)
        if n_classes:
            ax.axhline(100 / n_classes, color="grey", ls="--", lw=1,
                       label=f"chance {100 / n_classes:.3g} %")
        ax.set_ylabel("held-out top-1 (%)")
    axes[0].set_xticks(ks, [f"all ({depth})" if k == "all" else str(k) for k in tune_blocks])
    axes[0].set_xlabel("blocks fine-tuned (the last k; 0: head only)")
    axes[1].set_xscale("log")
    axes[1].set_xticks([100 * f for f in label_fractions],
                       [f"{100 * f:g} %" for f in label_fractions])
    axes[1].minorticks_off()
    axes[1].set_xlabel("share of the labelled training images (every block tuned)")
    axes[0].legend(fontsize=8)
    if n_test:
        fig.suptitle(f"n = {n_test} held-out images; error bars: 95 % Wilson interval", fontsize=9)
    fig.tight_layout()
    return fig
