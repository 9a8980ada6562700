"""What several figure modules share: the depth colours of layers and the check that a figure
has something to draw."""
from __future__ import annotations

from typing import Any, Mapping

import matplotlib.pyplot as plt


def layer_colors(n: int, cmap: str = "plasma") -> list[tuple[float, float, float, float]]:
    """``n`` RGBA colours from ``cmap``, shallow to deep (the ends of the map left out, so the
    first and last layers stay visible on white)."""
    return [plt.get_cmap(cmap)(0.05 + 0.85 * i / max(1, n - 1)) for i in range(n)]


def nonempty(results: Mapping[str, Any], what: str) -> dict[str, Any]:
    """``results`` as a dict; ValueError "no ``what`` to plot" when it is empty."""
    if not results:
        raise ValueError(f"no {what} to plot")
    return dict(results)
