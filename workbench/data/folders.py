"""Image folders ``ROOT/<class>/<image>`` (ImageNet layout) as a dataset.

``ROOT/train`` and ``ROOT/val`` are used as the splits when both exist, else every 10th file of
each class is held out. Unreadable files are skipped with a warning and counted
(``dataset.skipped``); grayscale, palette, RGBA and 16-bit images are converted to 8-bit RGB,
images smaller than the crop are upscaled by the crop's resize, and both are counted
(``dataset.converted``, ``dataset.report()``).
"""
from __future__ import annotations

import multiprocessing
import os
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .views import ViewDataset

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                    ".pgm"}


def to_rgb_uint8(img: Image.Image) -> np.ndarray:
    """Any PIL image -> [H, W, 3] uint8: 16/32-bit scaled down, alpha dropped, gray repeated."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(img).astype(np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or a.max() > 255 else 255.0
        a = np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2)
    if img.mode == "F":
        a = np.asarray(img, dtype=np.float64)
        a = (a - a.min()) / max(float(a.max() - a.min()), 1e-12)
        return np.repeat((a * 255 + 0.5).astype(np.uint8)[..., None], 3, axis=2)
    return np.array(img.convert("RGB"))  # a writable copy


def conversions(mode: str, size: tuple[int, int], img_size: int) -> list[str]:
    """What loading an image of PIL ``mode`` and ``size`` (w, h) changes, for the data log."""
    notes = []
    if mode.startswith("I;16"):
        notes.append("16-bit -> 8-bit RGB")
    elif mode in ("I", "F"):
        notes.append(f"{'32-bit integer' if mode == 'I' else 'float'} -> 8-bit RGB")
    elif mode in ("L", "1", "LA", "P", "PA"):
        notes.append({"P": "palette", "PA": "palette"}.get(mode, "grayscale") + " -> RGB")
    elif mode not in ("RGB", "RGBA"):
        notes.append(f"{mode} -> RGB")
    if mode in ("RGBA", "LA", "PA"):
        notes.append("alpha dropped")
    if min(size) < img_size:
        notes.append(f"smaller than {img_size} px (upscaled)")
    return notes


def _open_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        img.load()
        return to_rgb_uint8(img)


class FolderImages(ViewDataset):
    """``root/<class>/<file>`` images; labels are class folder indices (sorted names). Not
    torchvision's ``ImageFolder``: its items are seeded views, as every :class:`ViewDataset`'s.

    ``verify`` decodes every file up front (default: when there are at most 5000 files), so
    truncated files are skipped before training; otherwise only files without an image extension
    are opened at scan time, and a file that fails to decode later is skipped then (warning, count)
    and replaced by the next readable one. ``augment`` and ``seed`` as for every
    :class:`ViewDataset`.
    """

    def __init__(self, root: str | os.PathLike, img_size: int, split: str = "train",
                 train_transform: bool = True, verify: bool | None = None, augment: str = "mae",
                 seed: int = 0):
        super().__init__(img_size, split, train_transform, augment, seed)
        root = Path(root)
        if root.is_file():
            raise NotADirectoryError(f"{root} is a file, not an image folder ROOT/<class>/<image>; "
                                     f"to look at images, workbench.data.load_images takes files")
        if not root.is_dir():
            raise FileNotFoundError(f"image folder not found: {root}")
        presplit = (root / "train").is_dir() and (root / "val").is_dir()
        base = root / ("train" if split == "train" else "val") if presplit else root
        self.classes = sorted(d.name for d in base.iterdir()
                              if d.is_dir() and not d.name.startswith("."))
        if not self.classes:
            raise ValueError(f"{base} has no class subfolders (expected ROOT/<class>/<image>, a "
                             f"labelled set); to look at a flat folder of images, "
                             f"workbench.data.load_images takes it")
        files = []
        for c, name in enumerate(self.classes):
            found = sorted(p for p in (base / name).rglob("*")
                           if p.is_file() and not p.name.startswith("."))
            if not presplit:  # every 10th file of each class is held out
                found = [p for k, p in enumerate(found) if (k % 10 == 9) == (split == "heldout")]
            files += [(p, c) for p in found]
        verify = len(files) <= 5000 if verify is None else verify
        self.root = base
        self.skipped: list[tuple[str, str]] = []
        self.converted: Counter[str] = Counter()  # counted when files are verified at scan time
        self.samples: list[tuple[Path, int]] = []
        for p, c in files:
            reason, notes = self._inspect(p, full=verify, img_size=img_size)
            if reason is None:
                self.samples.append((p, c))
                self.converted.update(notes)
            else:
                self.skipped.append((str(p), reason))
        if self.skipped:
            warnings.warn(f"{base}: skipped {len(self.skipped)} unreadable file(s), e.g. "
                          f"{self.skipped[0][0]} ({self.skipped[0][1]})")
        if not self.samples:
            held = (" (the held-out split is every 10th file of each class: a class needs 10)"
                    if split == "heldout" and not presplit else "")
            raise ValueError(f"{base} ({split}) has no readable images{held}; to look at every "
                             f"image of a folder, workbench.data.load_images takes it")
        self._bad: set[int] = set()  # this process's files that failed to decode while loading
        # files that failed while loading, counted over every process that loads (DataLoader
        # workers inherit this shared counter; a per-process list would be lost with the worker)
        self._failed_loading = multiprocessing.Value("i", 0)

    @property
    def skipped_while_loading(self) -> int:
        """Files that passed the scan but failed to decode while loading, in any process."""
        return int(self._failed_loading.value)

    @staticmethod
    def _inspect(path: Path, full: bool, img_size: int) -> tuple[str | None, list[str]]:
        """(why the file is skipped or None, the conversions loading it will make)."""
        if not full and path.suffix.lower() in IMAGE_EXTENSIONS:
            return None, []
        try:
            with Image.open(path) as img:
                if full:
                    img.load()
                return None, conversions(img.mode, img.size, img_size)
        except Exception as e:  # noqa: BLE001 - any decoder error means "skip this file"
            return f"{type(e).__name__}: {e}", []

    def report(self) -> str:
        """One line for the training log: images used, skipped and converted, with counts."""
        text = f"{self.root}: {len(self.samples)} images in {len(self.classes)} classes"
        if self.skipped:
            text += f"; skipped {len(self.skipped)} unreadable (e.g. {self.skipped[0][0]})"
        if self.skipped_while_loading:
            text += f"; {self.skipped_while_loading} more failed to decode while loading"
        if self.converted:
            text += "; converted: " + ", ".join(f"{n} {what}" for what, n in
                                                sorted(self.converted.items()))
        return text

    def __len__(self) -> int:
        return len(self.samples)

    def label(self, index: int) -> int:
        return self.samples[index][1]

    def region(self, index: int):
        for k in range(len(self.samples)):  # the next readable file if this one fails
            i = (index + k) % len(self.samples)
            if i in self._bad:
                continue
            try:
                a = _open_rgb(self.samples[i][0])
            except Exception as e:  # noqa: BLE001
                self._bad.add(i)
                with self._failed_loading.get_lock():
                    self._failed_loading.value += 1
                warnings.warn(f"skipped unreadable image {self.samples[i][0]}: {e} "
                              f"({len(self.skipped) + self.skipped_while_loading} skipped so far)")
                continue
            img = torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)
            return img, (0, 0, img.shape[1], img.shape[2])
        raise RuntimeError("no image of this folder could be decoded")


