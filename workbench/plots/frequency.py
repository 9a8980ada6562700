"""Park & Kim's Fourier figures: Δ log amplitude over frequency for every layer, the highest
frequency against depth, and the last layer's spectrum for each model."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
from matplotlib.lines import Line2D
import numpy as np

from .common import layer_colors

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
    colors = layer_colors(len(blocks))
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
