"""Writing figures: PNG + SVG (matplotlib) or HTML (plotly), with the numbers behind each as
JSON."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..core.results import to_jsonable


def save_figure(fig: Any, out_dir: str | os.PathLike, name: str, data: Any = None) -> list[Path]:
    """Write ``fig`` into ``out_dir`` as ``name.png`` + ``name.svg`` (matplotlib) or
    ``name.html`` (plotly), plus ``name.json`` with ``data``; returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    if hasattr(fig, "savefig"):
        for ext in ("png", "svg"):
            paths.append(out / f"{name}.{ext}")
            fig.savefig(paths[-1], dpi=150, bbox_inches="tight")
    elif hasattr(fig, "write_html"):
        paths.append(out / f"{name}.html")
        fig.write_html(paths[-1], include_plotlyjs="cdn" if os.environ.get("PLOTLY_CDN") else True)
    else:
        raise TypeError(f"cannot save a {type(fig).__name__}: expected a matplotlib or plotly figure")
    if data is not None:
        paths.append(save_json(out, name, data))
    return paths


def save_json(out_dir: str | os.PathLike, name: str, data: Any) -> Path:
    """Write the numbers behind a figure (:func:`to_jsonable`) to ``out_dir/name.json``."""
    path = Path(out_dir) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_jsonable(data), indent=1))
    return path
