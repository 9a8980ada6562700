"""Views: the transforms that turn an image region into a model input, and the dataset base
class whose items are such views.

The MAE transform is RandomResizedCrop(S, scale=(0.2, 1), bicubic) + horizontal flip + ImageNet
normalisation; the eval transform is resize (shorter side S / 0.875) + center crop S + normalise.
"""
from __future__ import annotations

import math

import torch
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from ..core.config import AUGMENTATIONS
from ..core.seeds import derive_seed

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_SCALE = (0.2, 1.0)  # MAE's RandomResizedCrop area range
CROP_RATIO = (3 / 4, 4 / 3)
EVAL_CROP = 0.875  # eval: resize to S / 0.875, center crop S (224 of 256)
# Training augmentations (core.config.AUGMENTATIONS): "mae" (MAE's RandomResizedCrop(0.2-1) + flip: the default, so MAE and
# MFF-MAE see the same images and differ only in the fusion) or "resize-crop" (what mmpretrain's
# released MFF configs use: resize to S, RandomCrop(S, padding 4, reflect), flip).
CROP_PADDING = 4  # "resize-crop": reflect padding before the random crop, pixels
PLAIN_VIEW = 4  # derive_seed purpose of the augmentation of plain indexing, ds[i]
SPLITS = ("train", "heldout")


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split


def check_augment(augment: str) -> str:
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {augment!r}")
    return augment


def plain_view_seed(seed: int, index: int) -> int:
    """The augmentation seed of plain indexing ``ds[index]`` of a dataset made with ``seed``."""
    return derive_seed(seed, index, PLAIN_VIEW)


# ----------------------------------------------------------------------------- transforms
def normalize(x: torch.Tensor) -> torch.Tensor:
    """uint8 [..., 3, H, W] -> float, ImageNet mean/std normalised."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (x.float() / 255.0 - mean) / std


def unnormalize(x: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised [..., 3, H, W] -> [0, 1] (clamped)."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x * std + mean).clamp(0, 1)


def random_resized_box(h: int, w: int, g: torch.Generator, scale=CROP_SCALE,
                       ratio=CROP_RATIO) -> tuple[int, int, int, int]:
    """RandomResizedCrop's box (top, left, height, width) inside an h x w region, drawn from ``g``
    (torchvision's rule: 10 tries of random area and log-uniform aspect, else a center crop)."""
    area = h * w
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        u = torch.rand(2, generator=g).tolist()
        target = area * (scale[0] + u[0] * (scale[1] - scale[0]))
        aspect = math.exp(log_r[0] + u[1] * (log_r[1] - log_r[0]))
        cw = int(round(math.sqrt(target * aspect)))
        ch = int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            top = int(torch.randint(0, h - ch + 1, (1,), generator=g))
            left = int(torch.randint(0, w - cw + 1, (1,), generator=g))
            return top, left, ch, cw
    in_ratio = w / h
    if in_ratio < ratio[0]:
        cw, ch = w, int(round(w / ratio[0]))
    elif in_ratio > ratio[1]:
        ch, cw = h, int(round(h * ratio[1]))
    else:
        cw, ch = w, h
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def center_box(h: int, w: int) -> tuple[int, int, int, int]:
    """Resize-then-center-crop as one box: the central square of side 0.875 * shorter side."""
    side = max(1, int(round(min(h, w) * EVAL_CROP)))
    return (h - side) // 2, (w - side) // 2, side, side


def padded_random_crop(img: torch.Tensor, g: torch.Generator, pad: int = CROP_PADDING
                       ) -> torch.Tensor:
    """RandomCrop(padding=pad, padding_mode="reflect"): [3, S, S] -> [3, S, S], the offset drawn
    from ``g``."""
    size = img.shape[-1]
    padded = TF.pad(img, [pad], padding_mode="reflect")
    i, j = (int(torch.randint(0, 2 * pad + 1, (1,), generator=g)) for _ in range(2))
    return TF.crop(padded, i, j, size, size)


def view(img: torch.Tensor, box: tuple[int, int, int, int], size: int, train: bool,
         g: torch.Generator | None = None, augment: str = "mae") -> torch.Tensor:
    """uint8 [3, H, W] and a region box (top, left, h, w) -> normalised float [3, size, size]:
    a training augmentation (``augment``, see :data:`AUGMENTATIONS`) or the eval transform,
    inside the box."""
    top, left, h, w = box
    if train and augment == "resize-crop":
        out = TF.resized_crop(img, top, left, h, w, [size, size],
                              interpolation=InterpolationMode.BICUBIC, antialias=True)
        out = padded_random_crop(out, g)
    else:
        i, j, ch, cw = random_resized_box(h, w, g) if train else center_box(h, w)
        out = TF.resized_crop(img, top + i, left + j, ch, cw, [size, size],
                              interpolation=InterpolationMode.BICUBIC, antialias=True)
    if train and bool(torch.rand(1, generator=g) < 0.5):
        out = TF.horizontal_flip(out)
    return normalize(out)


# ----------------------------------------------------------------------------- base dataset
class ViewDataset(Dataset):
    """Common item logic: ``ds[(i, seed)]`` -> (img [3, S, S], label), the training augmentation
    drawn from ``seed`` (the training loop's per-sample seeds, :class:`StepBatches`); plain
    ``ds[i]`` uses the seed derived from the dataset's ``seed`` and ``i``
    (:func:`plain_view_seed`), so it is the same view every time and draws nothing from the
    global generators. ``augment``: the training augmentation (:data:`AUGMENTATIONS`)."""

    def __init__(self, img_size: int, split: str = "train", train_transform: bool = True,
                 augment: str = "mae", seed: int = 0):
        self.img_size, self.split = img_size, check_split(split)
        self.train_transform, self.augment = train_transform, check_augment(augment)
        self.seed = int(seed)
        self.classes: list[str] = []

    def region(self, index: int) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
        """uint8 [3, H, W] image and the (top, left, h, w) box the item is taken from."""
        raise NotImplementedError

    def label(self, index: int) -> int:
        raise NotImplementedError

    def __getitem__(self, key) -> tuple[torch.Tensor, int]:
        index, seed = key if isinstance(key, tuple) else (key, None)
        g = None
        if self.train_transform:
            if seed is None:  # plain indexing: this item's own seed, nothing global drawn
                seed = plain_view_seed(self.seed, int(index))
            g = torch.Generator().manual_seed(int(seed))
        img, box = self.region(int(index))
        return (view(img, box, self.img_size, self.train_transform, g, self.augment),
                self.label(int(index)))

    @property
    def labels(self) -> list[int]:
        return [self.label(i) for i in range(len(self))]


