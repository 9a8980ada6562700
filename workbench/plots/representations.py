"""Figures of the representation probes (matplotlib): per-block probe accuracy, CKA heat maps,
attention distance / entropy / NMI by depth, and the kNN monitor over training.

Like the other figures of :mod:`workbench.plots`, these draw numbers the probes return; the only
statistic computed here is the Wilson interval of an accuracy
(:func:`workbench.plots.accuracy.wilson_errors`). Each returns a figure (save it with
``workbench.plots.save_figure``).
"""
from __future__ import annotations

from typing import Any, Mapping

import matplotlib.pyplot as plt
import numpy as np

from .accuracy import wilson_errors
from .common import nonempty

POOL_STYLES = {"cls": "-", "mean": "--"}
POOL_NAMES = {"cls": "cls token", "mean": "mean of patch tokens"}


def layer_probe_figure(results: Mapping[str, Any], title: str | None = None):
    """One panel per classifier (linear, kNN): accuracy (%) of every block's features against
    block index, a line per model and pooling (cls solid, mean dashed), 95 % Wilson intervals,
    the chance line and each line's best block ringed. ``results``: model name ->
    ``probes.LayerProbes``."""
    results = nonempty(results, "layer probes")
    first = next(iter(results.values()))
    classifiers = sorted({p.split()[0] for p in first.correct}, key=["linear", "kNN"].index)
    fig, axes = plt.subplots(1, len(classifiers), figsize=(5.2 * len(classifiers), 3.6),
                             squeeze=False, sharey=True)
    for ax, clf in zip(axes[0], classifiers):
        for m, (name, r) in enumerate(results.items()):
            for probe, acc in r.accuracy.items():
                if not probe.startswith(clf + " "):
                    continue
                pool = probe.split()[1]
                line = ax.errorbar(r.layers, 100 * acc, yerr=wilson_errors(acc, r.n_test),
                                   color=f"C{m}", ls=POOL_STYLES.get(pool, "-"), capsize=2,
                                   marker="o", ms=3, label=f"{name} {pool}")
                best = r.layers.index(r.best_layer(probe))
                ax.plot(r.layers[best], 100 * acc[best], "o", ms=10, mfc="none",
                        color=line[0].get_color())
        ax.axhline(100 / first.n_classes, color="grey", ls=":", lw=1,
                   label=f"chance 1/{first.n_classes}")
        ax.set_xlabel("encoder block"), ax.set_title(f"{clf} probe (ringed: best block)",
                                                    fontsize=10)
        ax.set_xticks(first.layers)
    axes[0, 0].set_ylabel(f"accuracy (%), n = {first.n_test} held-out images")
    axes[0, -1].legend(handles=_probe_legend(results, first.n_classes), fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _probe_legend(results: Mapping[str, Any], n_classes: int) -> list:
    """A colour per model, a line style per pooling, and the chance line."""
    from matplotlib.lines import Line2D

    pools = sorted({p.split()[1] for r in results.values() for p in r.correct})
    return ([Line2D([], [], color=f"C{m}", marker="o", ms=3, label=name)
             for m, name in enumerate(results)]
            + [Line2D([], [], color="grey", ls=POOL_STYLES.get(p, "-"),
                      label=POOL_NAMES.get(p, p)) for p in pools]
            + [Line2D([], [], color="grey", ls=":", label=f"chance 1/{n_classes}")])


def cka_figure(matrices: Mapping[str, np.ndarray], labels: Mapping[str, tuple[str, str]]
               | None = None, title: str | None = None):
    """Linear CKA heat maps, one panel per entry of ``matrices`` (name -> [La, Lb]; e.g. "MAE",
    "MFF-MAE", "MAE × MFF-MAE"), on one colour scale from the lowest value shown (rounded down
    to 0.05) to 1, so that differences among high similarities stay visible; ``labels`` names
    each panel's (rows, columns) axes."""
    matrices = nonempty(matrices, "CKA matrices")
    low = min(float(np.nanmin(np.asarray(m))) for m in matrices.values())
    vmin = min(0.9, max(0.0, np.floor(low * 20) / 20))
    fig, axes = plt.subplots(1, len(matrices), figsize=(3.8 * len(matrices) + 0.8, 3.6),
                             squeeze=False)
    image = None
    for ax, (name, m) in zip(axes[0], matrices.items()):
        m = np.asarray(m)
        image = ax.imshow(m, origin="lower", vmin=vmin, vmax=1, cmap="magma")
        rows, cols = (labels or {}).get(name, ("block", "block"))
        ax.set_ylabel(rows), ax.set_xlabel(cols), ax.set_title(name, fontsize=10)
        ax.set_xticks(range(m.shape[1])), ax.set_yticks(range(m.shape[0]))
    fig.colorbar(image, ax=list(axes[0]), label="linear CKA")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


ATTENTION_PANELS = (("distance", "mean attention distance (px)"),
                    ("entropy", "attention entropy (nats)"), ("nmi", "NMI (query; key)"))


def attention_figure(stats: Mapping[str, Any], title: str | None = None):
    """cl-vs-mim's depth-wise view: per block, each head's mean attention distance, entropy and
    NMI (points) and their mean over heads (line), a colour per model. ``stats``: model name ->
    ``probes.AttentionStatistics``."""
    stats = nonempty(stats, "attention statistics")
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for m, (name, s) in enumerate(stats.items()):
        for ax, (field, label) in zip(axes, ATTENTION_PANELS):
            v = np.asarray(getattr(s, field))  # [L, H]
            depth = np.arange(v.shape[0])
            ax.plot(np.repeat(depth, v.shape[1]) + 0.08 * (m - 0.5), v.ravel(), ".", ms=4,
                    color=f"C{m}", alpha=0.6)
            ax.plot(depth, v.mean(axis=1), "-", color=f"C{m}", label=f"{name} (mean of heads)")
            ax.set_xlabel("encoder block"), ax.set_ylabel(label), ax.set_xticks(depth)
    first = next(iter(stats.values()))
    what = (f"points: heads; n = {first.n_images} images, {first.grid_size}×{first.grid_size} "
            f"patches of {first.patch_size} px")  # over the whole figure: a panel clips it
    axes[-1].legend(fontsize=7)
    fig.suptitle(f"{title}\n{what}" if title else what, fontsize=9)
    fig.tight_layout()
    return fig


def knn_history_figure(histories: Mapping[str, Any],
                       title: str = "feature monitor: held-out accuracy during pretraining"):
    """The monitor's accuracy (%) against training step, a colour per model: the linear probe
    (solid, when the run logged it) and the weighted kNN vote (dashed), with 95 % Wilson
    intervals when the number of queries is known. ``histories``: name -> ``KnnHistory``."""
    histories = nonempty(histories, "kNN histories")
    fig, ax = plt.subplots(figsize=(5.8, 3.6))
    for m, (name, h) in enumerate(histories.items()):
        readings = [("kNN", h.accuracy, "--")]
        if h.probe_accuracy is not None:
            readings.insert(0, ("linear probe", h.probe_accuracy, "-"))
        for what, values, style in readings:
            acc = np.asarray(values)
            yerr = wilson_errors(acc, h.n_queries) if h.n_queries else None
            ax.errorbar(h.steps, 100 * acc, yerr=yerr, marker="o", ms=4, capsize=3,
                        color=f"C{m}", ls=style, label=f"{name} {what}")
    n = {h.n_queries for h in histories.values()}
    ax.set_xlabel("training step")
    ax.set_ylabel("held-out accuracy (%)" + (f", n = {n.pop()} queries" if len(n) == 1 and None
                                            not in n else ""))
    ax.set_title(title, fontsize=10), ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
