"""The built-in labelled set with semantic labels: shapes drawn over photo textures.

Each item is one filled shape -- circle, ring, square, triangle, star, cross, hexagon or crescent
(classes that stay distinct under any rotation and scale) -- of a random colour, at a random
position, size and rotation, over a background cropped from the built-in photos. The label is the
shape, so colour and texture statistics alone cannot tell the classes apart (unlike the photo
identity of ``"builtin"``), while every item still looks like the photos the models pretrain on.

Items are a pure function of ``(seed, split, index)``: the set is unlimited (any index renders),
``len()`` is a nominal size, and held-out items take their backgrounds only from the photos'
held-out bands (:func:`workbench.data.photo_tiles`), so no held-out pixel is seen in training.
``build_dataset("shapes", ...)`` returns :class:`BuiltinShapes`.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from .photos import builtin_photos, photo_tiles
from ..core.seeds import derive_seed
from .views import check_augment, check_split, normalize, plain_view_seed

SHAPE_CLASSES = ("circle", "ring", "square", "triangle", "star", "cross", "hexagon", "crescent")
SUPERSAMPLE = 4  # shapes are drawn at 4x and box-filtered down: antialiased edges
RADIUS = (0.25, 0.42)  # shape radius as a fraction of the image side
MIN_CONTRAST = 90.0  # least RGB distance between the shape's colour and the background's mean
SPLIT_IDS = {"train": 0, "heldout": 1}
DEFAULT_SIZES = {"train": 8192, "heldout": 2048}


# ----------------------------------------------------------------------------- geometry
def regular_polygon(corners: int, radius: float = 1.0, phase: float = 0.0) -> np.ndarray:
    """[corners, 2] vertices on a circle of ``radius`` around the origin."""
    a = phase + 2 * math.pi * np.arange(corners) / corners
    return radius * np.stack([np.cos(a), np.sin(a)], axis=1)


def star(points: int = 5, inner: float = 0.42) -> np.ndarray:
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    a = math.pi / 2 + math.pi * np.arange(2 * points) / points
    return radii[:, None] * np.stack([np.cos(a), np.sin(a)], axis=1)


def plus_sign(half_width: float = 0.33) -> np.ndarray:
    w = half_width
    return np.array([(w, 1), (w, w), (1, w), (1, -w), (w, -w), (w, -1), (-w, -1), (-w, -w),
                     (-1, -w), (-1, w), (-w, w), (-w, 1)], dtype=float)


# Each shape: polygons filled in order, (vertices in the unit disc, fill 1 = shape, 0 = hole).
SHAPE_POLYGONS: dict[str, list[tuple[np.ndarray, int]]] = {
    "circle": [(regular_polygon(64), 1)],
    "ring": [(regular_polygon(64), 1), (regular_polygon(64, 0.55), 0)],
    "square": [(regular_polygon(4, 1.0, math.pi / 4), 1)],
    "triangle": [(regular_polygon(3, 1.0, math.pi / 2), 1)],
    "star": [(star(), 1)],
    "cross": [(plus_sign(), 1)],
    "hexagon": [(regular_polygon(6), 1)],
    "crescent": [(regular_polygon(64), 1), (regular_polygon(64, 0.85) + [0.45, 0.0], 0)],
}


@dataclass(frozen=True)
class ShapeItem:
    """Everything random about one item, drawn from its seed."""

    label: int
    centre: tuple[float, float]  # (x, y) in pixels
    radius: float  # pixels
    angle: float  # radians
    photo: int  # background photo
    box: tuple[int, int, int, int]  # background crop (top, left, h, w) in that photo


@functools.lru_cache(maxsize=64)
def background_tiles(img_size: int, photo: int, split: str) -> list:
    """The tiles of one built-in photo that ``split``'s backgrounds are cropped from."""
    h, w = builtin_photos(img_size)[photo][1].shape[1:]
    return photo_tiles(h, w, photo, split)


def draw_item_params(seed: int, label: int, img_size: int, split: str) -> ShapeItem:
    """The random choices of one item (position, size, rotation, background crop)."""
    rng = np.random.default_rng(seed)
    radius = rng.uniform(*RADIUS) * img_size
    cx, cy = rng.uniform(radius + 1, img_size - radius - 1, size=2)  # a pixel clear of the border
    photo = int(rng.integers(len(builtin_photos(img_size))))
    tiles = background_tiles(img_size, photo, split)
    tile = tiles[int(rng.integers(len(tiles)))]
    side = max(2, int(round(tile.size * rng.uniform(0.5, 1.0))))
    top = tile.top + int(rng.integers(tile.size - side + 1))
    left = tile.left + int(rng.integers(tile.size - side + 1))
    return ShapeItem(label, (float(cx), float(cy)), float(radius), float(rng.uniform(0, 2 * np.pi)),
                     photo, (top, left, side, side))


def shape_mask(item: ShapeItem, img_size: int) -> torch.Tensor:
    """Coverage of the shape per pixel, float [S, S] in [0, 1] (antialiased)."""
    big = img_size * SUPERSAMPLE
    canvas = Image.new("L", (big, big), 0)
    pen = ImageDraw.Draw(canvas)
    c, s = math.cos(item.angle), math.sin(item.angle)
    turn = np.array([[c, -s], [s, c]])
    for vertices, fill in SHAPE_POLYGONS[SHAPE_CLASSES[item.label]]:
        pts = (vertices @ turn.T * item.radius + item.centre) * SUPERSAMPLE
        pen.polygon([tuple(p) for p in pts], fill=255 * fill)
    small = canvas.resize((img_size, img_size), Image.Resampling.BOX)
    return torch.from_numpy(np.asarray(small, dtype=np.float32) / 255.0)


def shape_colour(background: torch.Tensor, seed: int) -> torch.Tensor:
    """A random RGB colour at least :data:`MIN_CONTRAST` away from the background's mean."""
    rng = np.random.default_rng(seed)
    mean = background.float().mean(dim=(1, 2)).numpy()
    for _ in range(16):
        colour = rng.uniform(0, 255, size=3)
        if np.linalg.norm(colour - mean) >= MIN_CONTRAST:
            break
    else:  # a mid-grey background: the opposite corner of the colour cube
        colour = np.where(mean < 128, 255.0, 0.0)
    return torch.tensor(colour, dtype=torch.float32)


def render(item: ShapeItem, img_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 image [3, S, S], coverage mask [S, S]) of one item."""
    photo = builtin_photos(img_size)[item.photo][1]
    top, left, h, w = item.box
    background = TF.resized_crop(photo, top, left, h, w, [img_size, img_size],
                                 interpolation=InterpolationMode.BILINEAR, antialias=True)
    mask = shape_mask(item, img_size)
    colour = shape_colour(background, derive_seed(seed, 1))
    img = background.float() * (1 - mask) + colour[:, None, None] * mask
    return img.round().clamp(0, 255).to(torch.uint8), mask


# ----------------------------------------------------------------------------- the dataset
class BuiltinShapes(Dataset):
    """``ds[i]`` or ``ds[(i, aug_seed)]`` -> (img [3, S, S] ImageNet-normalised, label), as every
    workbench dataset. The training transform is a horizontal flip drawn from ``aug_seed`` (a
    random crop could cut the shape out, so ``augment`` can only be "mae", the default); plain
    ``ds[i]`` flips by the seed derived from ``seed`` and ``i``. The item itself is already
    random, a function of ``seed``."""

    def __init__(self, img_size: int, split: str = "train", train_transform: bool = True,
                 seed: int = 0, size: int | None = None, augment: str = "mae"):
        check_split(split)
        if check_augment(augment) != "mae":
            raise ValueError(f"augment={augment!r} does not apply to the built-in shapes: their "
                             f"training transform is a flip (a crop could cut the shape out)")
        if size is not None and size < 1:
            raise ValueError(f"size must be a positive number of items, got {size}")
        self.img_size, self.split, self.train_transform = img_size, split, train_transform
        self.seed, self.size, self.augment = seed, size or DEFAULT_SIZES[split], augment
        self.classes = list(SHAPE_CLASSES)
        self.skipped: list[tuple[str, str]] = []

    def __len__(self) -> int:
        return self.size

    def label(self, index: int) -> int:
        return index % len(SHAPE_CLASSES)

    @property
    def labels(self) -> list[int]:
        return [self.label(i) for i in range(len(self))]

    def item_seed(self, index: int) -> int:
        if index < 0:
            raise IndexError(f"shape items have non-negative indices, got {index}")
        return derive_seed(self.seed, SPLIT_IDS[self.split], index, 7)

    def item(self, index: int) -> ShapeItem:
        return draw_item_params(self.item_seed(index), self.label(index), self.img_size,
                                self.split)

    def render(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(uint8 image [3, S, S], coverage mask [S, S]) of item ``index``, untransformed."""
        return render(self.item(index), self.img_size, self.item_seed(index))

    def __getitem__(self, key) -> tuple[torch.Tensor, int]:
        index, aug = key if isinstance(key, tuple) else (key, None)
        img, _ = self.render(int(index))
        if self.train_transform:
            if aug is None:  # plain indexing: this item's own seed, nothing global drawn
                aug = plain_view_seed(self.seed, int(index))
            if np.random.default_rng(int(aug)).random() < 0.5:
                img = TF.horizontal_flip(img)
        return normalize(img), self.label(int(index))
