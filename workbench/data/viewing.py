"""Your own images, for looking at them (reconstructions, attention, features), not for training
a classifier: a file, a list of files, a folder flat or in class subfolders, or uploaded bytes,
of any size -- every image of it, none held out. Each comes back as the eval view the probes
use (resize, centre crop, ImageNet normalisation), with a line saying what was used.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .folders import IMAGE_EXTENSIONS, to_rgb_uint8
from .views import view

Source = str | os.PathLike | bytes


@dataclass
class ViewedImages:
    """Images ready for a model, and where each came from."""

    images: torch.Tensor  # [n, 3, S, S] ImageNet-normalised
    names: list[str]  # a file name (or "upload 1", ...) per image
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (name, why) not readable

    def summary(self) -> str:
        """'3 images (cat.png, dog.jpg, ...) at 32 px; skipped 1: notes.txt (not an image)'."""
        shown = ", ".join(self.names[:4]) + (", ..." if len(self.names) > 4 else "")
        text = f"{len(self.names)} image(s) ({shown}) at {self.images.shape[-1]} px"
        if self.skipped:
            text += f"; skipped {len(self.skipped)}: " + ", ".join(
                f"{n} ({why})" for n, why in self.skipped[:3])
        return text


def image_files(source: str | os.PathLike) -> list[Path]:
    """The image files of ``source``: the file itself, or every file with an image extension
    under a folder (its class subfolders included), sorted."""
    path = Path(source).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.rglob("*")
                      if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    raise FileNotFoundError(f"no image file or folder at {path}")


def decoded(data: bytes | Path) -> np.ndarray:
    """[H, W, 3] uint8 of an image file or its bytes (any PIL mode, converted as training
    converts it)."""
    with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as img:
        img.load()
        return to_rgb_uint8(img)


def eval_view(rgb: np.ndarray, img_size: int) -> torch.Tensor:
    """[H, W, 3] uint8 -> [3, S, S] normalised: the eval transform, over the whole image."""
    img = torch.from_numpy(rgb).permute(2, 0, 1).contiguous()
    return view(img, (0, 0, img.shape[1], img.shape[2]), img_size, train=False)


def load_images(sources: Source | Sequence[Source], img_size: int,
                limit: int | None = None) -> ViewedImages:
    """Images to look at, from a file, a folder (flat or ``<class>/`` subfolders), uploaded
    bytes or a list of any of these; at most ``limit`` (None: all). Unreadable files are
    skipped and named; none readable is a ValueError that says what was tried."""
    items = [sources] if isinstance(sources, (str, os.PathLike, bytes)) else list(sources)
    if not items:
        raise ValueError("no images given: pass a file, a folder, a list of them or uploads")
    found: list[tuple[str, bytes | Path]] = []
    for k, item in enumerate(items):
        if isinstance(item, bytes):
            found.append((f"upload {k + 1}", item))
        else:
            found += [(str(p.name), p) for p in image_files(item)]
    return viewed(found[:limit] if limit else found, img_size, items)


def viewed(found: Iterable[tuple[str, bytes | Path]], img_size: int, asked) -> ViewedImages:
    images, names, skipped = [], [], []
    for name, data in found:
        try:
            images.append(eval_view(decoded(data), img_size))
            names.append(name)
        except (UnidentifiedImageError, OSError, ValueError) as e:
            skipped.append((name, f"not a readable image: {type(e).__name__}"))
    if not images:
        tried = ", ".join(str(a) if not isinstance(a, bytes) else "an upload" for a in asked)
        why = f" (skipped: {', '.join(n for n, _ in skipped[:3])})" if skipped else ""
        raise ValueError(f"no readable image in {tried}{why}; the extensions read are "
                         f"{', '.join(sorted(IMAGE_EXTENSIONS))}")
    return ViewedImages(torch.stack(images), names, skipped)
