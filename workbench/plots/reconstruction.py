"""MAE's reconstruction figure (Figs. 2-4) in matplotlib: original / masked / reconstruction /
pasted for each image and model, captioned with how each reconstruction was un-normalised."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt

from ..core.pictures import COLUMNS, image_hwc, stats_caption


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
