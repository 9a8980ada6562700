"""Images for training and probing: the built-in photo set and ImageNet-style folders.

Every dataset item is ``(img [3, S, S] float, ImageNet-normalised, label int)``. Items are looked up
by an index, or by ``(index, seed)``: the seed fixes the random crop and flip, so the training loop
can make augmentation a function of (run seed, step, sample) only -- the same on any number of
ranks or workers.

* ``builtin``: square tiles of the photographs that scikit-image and scikit-learn ship (no
  download). Each photo keeps a band (its last third along the long side) for held-out tiles;
  training tiles come only from the rest. The label is the index of the source photo.
* ``shapes``: eight shape classes drawn at random position, size, rotation and colour over
  crops of those photos (:mod:`workbench.data.shapes`): a label that is semantic, not photo identity.
  Unlimited and deterministic; held-out items use only the photos' held-out bands.
* a folder ``ROOT/<class>/<image>`` (ImageNet layout): ``ROOT/train`` and ``ROOT/val`` are used as
  the splits when both exist, else every 10th file of each class is held out. Unreadable files are
  skipped with a warning and counted (``dataset.skipped``); grayscale, palette, RGBA and 16-bit
  images are converted to 8-bit RGB, images smaller than the crop are upscaled by the crop's
  resize, and both are counted (``dataset.converted``, ``dataset.report()``).

The MAE transform is RandomResizedCrop(S, scale=(0.2, 1), bicubic) + horizontal flip + ImageNet
normalisation; the eval transform is resize (shorter side S / 0.875) + center crop S + normalise.
"""
from __future__ import annotations

import functools
import math
import multiprocessing
import os
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_SCALE = (0.2, 1.0)  # MAE's RandomResizedCrop area range
CROP_RATIO = (3 / 4, 4 / 3)
EVAL_CROP = 0.875  # eval: resize to S / 0.875, center crop S (224 of 256)
# Training augmentations: "mae" (MAE's RandomResizedCrop(0.2-1) + flip: the default, so MAE and
# MFF-MAE see the same images and differ only in the fusion) or "resize-crop" (what mmpretrain's
# released MFF configs use: resize to S, RandomCrop(S, padding 4, reflect), flip).
AUGMENTATIONS = ("mae", "resize-crop")
CROP_PADDING = 4  # "resize-crop": reflect padding before the random crop, pixels
SPLITS = ("train", "heldout")
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                    ".pgm"}

BUILTIN_SETS = ("builtin", "shapes")  # the names build_dataset takes besides a folder
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


# ----------------------------------------------------------------------------- seeds
def derive_seed(*keys: int) -> int:
    """A 63-bit seed mixed from integers (splitmix64), e.g. ``(run seed, step, sample, purpose)``."""
    x = 0x9E3779B97F4A7C15
    for k in keys:
        x = (x ^ (int(k) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x = (x ^ (x >> 27)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & 0x7FFFFFFFFFFFFFFF


# ----------------------------------------------------------------------------- transforms
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
    """Common item logic: ``ds[i]`` or ``ds[(i, seed)]`` -> (img [3, S, S], label)."""

    img_size: int
    train_transform: bool
    classes: list[str]
    augment: str = "mae"  # the training augmentation (AUGMENTATIONS); set by build_dataset

    def region(self, index: int) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
        """uint8 [3, H, W] image and the (top, left, h, w) box the item is taken from."""
        raise NotImplementedError

    def label(self, index: int) -> int:
        raise NotImplementedError

    def __getitem__(self, key) -> tuple[torch.Tensor, int]:
        index, seed = key if isinstance(key, tuple) else (key, None)
        g = None
        if self.train_transform:
            if seed is None:  # plain indexing: draw the augmentation from the global RNG
                seed = int(torch.randint(0, 2**62, (1,)))
            g = torch.Generator().manual_seed(int(seed))
        img, box = self.region(int(index))
        return (view(img, box, self.img_size, self.train_transform, g, self.augment),
                self.label(int(index)))

    @property
    def labels(self) -> list[int]:
        return [self.label(i) for i in range(len(self))]


# ----------------------------------------------------------------------------- built-in photos
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
    """Tiles of the shipped photos; ``split="heldout"`` tiles never overlap training tiles."""

    def __init__(self, img_size: int, split: str = "train", train_transform: bool = True):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.img_size, self.split, self.train_transform = img_size, split, train_transform
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


# ----------------------------------------------------------------------------- image folders
def _open_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        img.load()
        return to_rgb_uint8(img)


class ImageFolder(ViewDataset):
    """``root/<class>/<file>`` images; labels are class folder indices (sorted names).

    ``verify`` decodes every file up front (default: when there are at most 5000 files), so
    truncated files are skipped before training; otherwise only files without an image extension
    are opened at scan time, and a file that fails to decode later is skipped then (warning, count)
    and replaced by the next readable one.
    """

    def __init__(self, root: str | os.PathLike, img_size: int, split: str = "train",
                 train_transform: bool = True, verify: bool | None = None):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"image folder not found: {root}")
        self.img_size, self.split, self.train_transform = img_size, split, train_transform
        presplit = (root / "train").is_dir() and (root / "val").is_dir()
        base = root / ("train" if split == "train" else "val") if presplit else root
        self.classes = sorted(d.name for d in base.iterdir()
                              if d.is_dir() and not d.name.startswith("."))
        if not self.classes:
            raise ValueError(f"{base} has no class subfolders (expected ROOT/<class>/<image>)")
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
            raise ValueError(f"{base} ({split}) has no readable images")
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


# ----------------------------------------------------------------------------- entry points
def build_dataset(name_or_path: str | os.PathLike = "builtin", img_size: int = 32,
                  split: str = "train", train_transform: bool = True,
                  augment: str = "mae") -> ViewDataset:
    """``"builtin"`` (photo tiles), ``"shapes"`` (labelled shapes over photo textures) or an
    image folder; ``train_transform`` False gives the eval transform, ``augment`` chooses the
    training one (:data:`AUGMENTATIONS`)."""
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {augment!r}")
    if str(name_or_path) == "shapes":
        if augment != "mae":
            raise ValueError(f"augment={augment!r} does not apply to the built-in shapes: their "
                             f"training transform is a flip (a crop could cut the shape out)")
        from .shapes import BuiltinShapes  # shapes draws its backgrounds from this module

        return BuiltinShapes(img_size, split, train_transform)
    ds = (BuiltinPhotos(img_size, split, train_transform) if str(name_or_path) == "builtin"
          else ImageFolder(name_or_path, img_size, split, train_transform))
    ds.augment = augment
    return ds


def fixed_batch(name_or_path: str | os.PathLike = "builtin", img_size: int = 32, n: int = 64,
                split: str = "heldout", seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed batch (eval transform): at most ``n`` items of ``split``, chosen by ``seed``.
    Returns (imgs [n, 3, S, S] normalised, labels [n] int64)."""
    ds = build_dataset(name_or_path, img_size, split, train_transform=False)
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n].tolist()
    items = [ds[i] for i in order]
    return (torch.stack([x for x, _ in items]),
            torch.tensor([y for _, y in items], dtype=torch.long))


def augmented_batches(name_or_path: str | os.PathLike = "builtin", img_size: int = 32,
                      n_batches: int = 8, batch_size: int = 16, seed: int = 0
                      ) -> list[torch.Tensor]:
    """``n_batches`` training minibatches [batch_size, 3, S, S] with the training augmentation, as
    a pure function of ``seed`` (items from a seeded permutation, each augmented with its own
    derived seed): two models measured on them see the same augmented images."""
    ds = build_dataset(name_or_path, img_size, "train", train_transform=True)
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(derive_seed(seed, 3)))
    batches = []
    for b in range(n_batches):
        keys = [(int(order[(b * batch_size + j) % len(ds)]), derive_seed(seed, b, j, 3))
                for j in range(batch_size)]
        batches.append(torch.stack([ds[k][0] for k in keys]))
    return batches


def heldout_batch(img_size: int = 32, n: int = 64, seed: int = 0,
                  data: str | os.PathLike = "builtin") -> tuple[torch.Tensor, torch.Tensor]:
    """Held-out images never seen in training, for probes, notebooks and the held-out loss."""
    return fixed_batch(data, img_size, n, "heldout", seed)


# ----------------------------------------------------------------------------- training order
class StepBatches:
    """The training order as a pure function of (seed, step): the global batch of step ``s`` is
    positions ``s * B .. s * B + B - 1`` of an endless stream made of one seeded permutation of the
    dataset per epoch. Sample ``k`` of the global batch augments with seed
    ``derive_seed(seed, s, k, 0)`` and masks with ``derive_seed(seed, s, k, 1)``.

    Each step is ``accum`` micro-batches; each micro-batch is split evenly over ``world`` ranks.
    Iterating yields this rank's micro-batches of ``(index, augment_seed)`` keys from
    ``start_step`` on, so a resumed run sees exactly the data it would have seen.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int = 0, accum: int = 1,
                 rank: int = 0, world: int = 1, start_step: int = 0, steps: int | None = None):
        if batch_size % (accum * world):
            raise ValueError(f"global batch {batch_size} is not divisible by accum_steps "
                             f"{accum} x ranks {world}")
        self.n, self.batch, self.seed = num_items, batch_size, seed
        self.accum, self.rank, self.world = accum, rank, world
        self.start, self.steps = start_step, steps
        self.local = batch_size // (accum * world)  # per rank and micro-batch
        self._perms: dict[int, list[int]] = {}

    def permutation(self, epoch: int) -> list[int]:
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(derive_seed(self.seed, epoch, 2))
            self._perms = {epoch: torch.randperm(self.n, generator=g).tolist()}  # keep one epoch
        return self._perms[epoch]

    def positions(self, step: int, micro: int) -> list[int]:
        """Global-batch positions k of this rank's part of micro-batch ``micro`` of ``step``."""
        first = micro * self.batch // self.accum + self.rank * self.local
        return list(range(first, first + self.local))

    def keys(self, step: int, micro: int) -> list[tuple[int, int]]:
        out = []
        for k in self.positions(step, micro):
            p = step * self.batch + k
            out.append((self.permutation(p // self.n)[p % self.n], derive_seed(self.seed, step, k, 0)))
        return out

    def mask_seeds(self, step: int, micro: int) -> list[int]:
        return [derive_seed(self.seed, step, k, 1) for k in self.positions(step, micro)]

    def __iter__(self):
        step = self.start
        while self.steps is None or step < self.steps:
            for micro in range(self.accum):
                yield self.keys(step, micro)
            step += 1

    def __len__(self) -> int:
        return 0 if self.steps is None else max(0, self.steps - self.start) * self.accum
