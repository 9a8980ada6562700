"""The built-in photo set: square tiles of the photographs that scikit-image and scikit-learn ship
(no download). Each photo keeps a band (its last third along the long side) for held-out tiles;
training tiles come only from the rest. The label is the index of the source photo.
"""
from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .views import ViewDataset

# (name, module, function): photographs shipped inside the installed packages (checked offline).
BUILTIN_SOURCES = (
    ("astronaut", "skimage", "astronaut"), ("camera", "skimage", "camera"),
    ("chelsea", "skimage", "chelsea"), ("coffee", "skimage", "coffee"),
    ("coins", "skimage", "coins"), ("hubble_deep_field", "skimage", "hubble_deep_field"),
    ("immunohistochemistry", "skimage", "immunohistochemistry"), ("moon", "skimage", "moon"),
    ("retina", "skimage", "retina"), ("rocket", "skimage", "rocket"),
    ("brick", "skimage", "brick"), ("grass", "skimage", "grass"), ("gravel", "skimage", "gravel"),
    ("china", "sklearn", "china.jpg"), ("flower", "sklearn", "flower.jpg"),
)


def array_to_rgb(a: np.ndarray) -> np.ndarray:
    """A scikit-image style array (gray, RGB, RGBA; uint8, bool or float) -> [H, W, 3] uint8."""
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    elif a.dtype != np.uint8:
        a = np.clip(a.astype(np.float64) * (255.0 if a.max() <= 1.0 else 1.0), 0, 255)
        a = (a + 0.5).astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    return np.ascontiguousarray(a[..., :3])


def _load_source(module: str, name: str) -> np.ndarray:
    if module == "skimage":
        import skimage.data

        return getattr(skimage.data, name)()
    from sklearn.datasets import load_sample_image

    return load_sample_image(name)


@functools.lru_cache(maxsize=None)
def builtin_photos_raw() -> tuple[tuple[str, np.ndarray], ...]:
    """The shipped photos as [H, W, 3] uint8 arrays; one that cannot be read offline is skipped."""
    photos = []
    for name, module, fn in BUILTIN_SOURCES:
        try:
            photos.append((name, array_to_rgb(_load_source(module, fn))))
        except Exception as e:  # noqa: BLE001 - e.g. a file that would need a download
            warnings.warn(f"built-in photo {name!r} is not available offline, skipped: {e}")
    if not photos:
        raise RuntimeError("no built-in photo could be loaded (scikit-image / scikit-learn data)")
    return tuple(photos)


@functools.lru_cache(maxsize=8)
def builtin_photos(img_size: int) -> tuple[tuple[str, torch.Tensor], ...]:
    """The photos as uint8 [3, H, W] tensors, shrunk (never enlarged) so a tile -- a third of the
    shorter side -- is about 2 * img_size pixels: crops then stay cheap at any resolution."""
    out = []
    for name, a in builtin_photos_raw():
        h, w = a.shape[:2]
        s = min(1.0, 6 * img_size / min(h, w))
        if s < 1.0:
            a = np.asarray(Image.fromarray(a).resize(
                (max(3, round(w * s)), max(3, round(h * s))), Image.Resampling.BICUBIC))
        out.append((name, torch.from_numpy(np.array(a)).permute(2, 0, 1).contiguous()))
    return tuple(out)


@dataclass(frozen=True)
class Tile:
    photo: int  # label: index of the source photo
    top: int
    left: int
    size: int


def photo_tiles(h: int, w: int, photo: int, split: str) -> list[Tile]:
    """Square tiles (side = shorter side // 3) of one h x w photo. The last ``side`` pixels along
    the long side form the held-out band; training tiles lie entirely before it."""
    t = min(h, w) // 3
    stride = max(1, t // 4)
    long, short = (w, h) if w >= h else (h, w)
    if split == "train":
        along = range(0, long - 2 * t + 1, stride)  # tile end <= long - t: outside the band
        across = range(0, short - t + 1, stride)
    else:
        along = [long - t]
        across = range(0, short - t + 1, stride)
    tiles = []
    for a in along:
        for c in across:
            top, left = (c, a) if w >= h else (a, c)
            tiles.append(Tile(photo, top, left, t))
    return tiles


class BuiltinPhotos(ViewDataset):
    """Tiles of the shipped photos; ``split="heldout"`` tiles never overlap training tiles.
    ``augment`` and ``seed`` as for every :class:`ViewDataset`."""

    def __init__(self, img_size: int, split: str = "train", train_transform: bool = True,
                 augment: str = "mae", seed: int = 0):
        super().__init__(img_size, split, train_transform, augment, seed)
        photos = builtin_photos(img_size)
        self.classes = [name for name, _ in photos]
        self.images = [img for _, img in photos]
        self.tiles = [tile for p, img in enumerate(self.images)
                      for tile in photo_tiles(img.shape[1], img.shape[2], p, split)]
        self.skipped: list[tuple[str, str]] = []

    def __len__(self) -> int:
        return len(self.tiles)

    def region(self, index: int):
        t = self.tiles[index]
        return self.images[t.photo], (t.top, t.left, t.size, t.size)

    def label(self, index: int) -> int:
        return self.tiles[index].photo


