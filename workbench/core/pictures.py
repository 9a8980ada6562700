"""Pictures of reconstructions as plain pixel arrays (no matplotlib, no ipywidgets): the one
renderer behind the reconstruction explorer's image and the training pictures.

A picture is a uint8 [H, W, 3] array made of panels (one per column: original, masked,
reconstruction, pasted -- the fields of :class:`workbench.probes.Reconstruction`), one row per
(image, model), upscaled by an integer factor (nearest) and separated by white gaps.
"""
from __future__ import annotations

import io
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from PIL import Image

# (field of a probes.Reconstruction, column label), in the order of MAE's Figures 2-4
COLUMNS = (("original", "original"), ("masked", "masked"), ("reconstruction", "reconstruction"),
           ("pasted", "reconstruction + visible"))
FIELDS = tuple(field for field, _ in COLUMNS)


def image_hwc(img: torch.Tensor) -> np.ndarray:
    """[3, H, W] display-space tensor in [0, 1] -> [H, W, 3] float32 numpy array, clamped."""
    return img.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def _to_uint8(panel: np.ndarray) -> np.ndarray:
    return (panel.astype(np.float64) * 255).round().astype(np.uint8)


def _panels_uint8(result: Any, i: int, columns: Sequence[str]) -> np.ndarray:
    """Image ``i``'s ``columns`` of one result as uint8 [F, H, W, 3], each pixel as
    ``_to_uint8(image_hwc(panel))`` rounds it (one conversion for all the panels)."""
    stack = torch.stack([getattr(result, field)[i].detach().float() for field in columns])
    return _to_uint8(stack.clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy())


def compose_rows(results: Mapping[str, Any] | Any, index: int | Iterable[int] = 0,
                 scale: int = 4, pad: int = 2, columns: Sequence[str] = FIELDS) -> np.ndarray:
    """One uint8 picture [H, W, 3] of reconstructions.

    ``results``: a model name -> ``probes.reconstruct`` result mapping (or one result). Rows go
    image by image (``index``: one index or several), and within an image model by model;
    ``columns`` are result fields (default original / masked / reconstruction / pasted). Each
    panel is upscaled ``scale`` times (nearest); panels and rows are separated by white gaps of
    ``pad * scale`` pixels (``pad=0``: none).

    The explorer shows ``compose_rows(results, 0, scale)``; a training picture of several images
    of one model is ``compose_rows(r, range(n), scale, pad=0,
    columns=("original", "masked", "pasted"))``.
    """
    if not isinstance(results, Mapping):
        results = {"": results}
    indices = [index] if isinstance(index, (int, np.integer)) else list(index)
    if not results or not indices or not columns:
        raise ValueError("nothing to draw: need at least one result, one image and one column")
    rows = [_panels_uint8(res, i, columns) for i in indices for res in results.values()]
    n, h, w, _ = rows[0].shape
    # gaps of pad * scale after upscaling = gaps of pad before: lay out small, upscale once
    small = np.full((len(rows) * (h + pad) - pad, n * (w + pad) - pad, 3), 255, np.uint8)
    for r, panels in enumerate(rows):
        for c, panel in enumerate(panels):
            small[r * (h + pad):r * (h + pad) + h, c * (w + pad):c * (w + pad) + w] = panel
    return upscale(small, scale)


def upscale(picture: np.ndarray, scale: int) -> np.ndarray:
    """Nearest upscaling of a uint8 [H, W, C] picture by an integer factor: ``repeat`` along both
    axes, with each pixel's C bytes moved as one item (numpy repeats 1-byte items slowly)."""
    hh, ww, c = picture.shape
    pixels = np.ascontiguousarray(picture).view(np.dtype((np.void, c)))[..., 0]  # [H, W]
    wide = pixels.repeat(scale, axis=1).view(np.uint8).reshape(hh, ww * scale * c)
    return wide.repeat(scale, axis=0).reshape(hh * scale, ww * scale, c)


def png_bytes(picture: np.ndarray) -> bytes:
    """A uint8 picture ([H, W, 3] RGB, [H, W, 4] RGBA or [H, W] grey) as PNG bytes (Pillow).

    Deflated at level 1, the fastest that still compresses: the explorer redraws at every slider
    move, and Pillow's time goes to choosing each row's filter, not to deflating (a 4 × 224 px
    row of panels: ~2 ms and ~8 kB; level 0 is barely faster but ~70 times larger)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(picture)).save(buf, format="png", compress_level=1)
    return buf.getvalue()


STATS_CAPTIONS = {"visible": "norm-pix target, un-normalised with visible-patch statistics",
                  "oracle": "norm-pix target, ORACLE statistics of the true masked patches",
                  "pixels": "pixel target"}


def stats_caption(stats: Mapping[str, str]) -> str:
    """What each reconstruction shows: its target and how it was un-normalised (models that
    share it are named together)."""
    groups: dict[str, list[str]] = {}
    for name, how in stats.items():
        groups.setdefault(how, []).append(name)
    return "; ".join(f"{', '.join(names)}: {STATS_CAPTIONS.get(how, how)}"
                     for how, names in groups.items())


def attention_overlay(img: torch.Tensor, weights: torch.Tensor, query: tuple[int, int],
                      patch: int, scale: int = 4) -> np.ndarray:
    """One query's attention over the image: ``img`` [3, H, W] display-space in [0, 1],
    ``weights`` [g, g] over the patches (drawn relative to their maximum, magma), blended half
    and half with the image, the query patch outlined in white; uint8 [H*scale, W*scale, 3]."""
    import matplotlib

    w = weights.detach().double().cpu().numpy()
    heat = matplotlib.colormaps["magma"](w / max(w.max(), 1e-12))[..., :3]  # [g, g, 3]
    heat = heat.repeat(patch, axis=0).repeat(patch, axis=1)  # [H, W, 3]
    picture = upscale(_to_uint8(0.5 * image_hwc(img) + 0.5 * heat), scale)
    r, c = query
    top, left, size = r * patch * scale, c * patch * scale, patch * scale
    picture[top:top + size, [left, left + size - 1]] = 255  # the query's left / right edges
    picture[[top, top + size - 1], left:left + size] = 255  # top / bottom edges
    return picture


def colour_bar(width: int, height: int = 12, cmap: str = "magma") -> np.ndarray:
    """A horizontal strip of ``cmap`` from its low end (left) to its high end (right), uint8
    [height, width, 3]: the key of :func:`attention_overlay`'s colours."""
    import matplotlib

    row = matplotlib.colormaps[cmap](np.linspace(0.0, 1.0, width))[:, :3]  # [width, 3]
    return _to_uint8(np.broadcast_to(row, (height, width, 3)).copy())
