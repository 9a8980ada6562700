"""The entry points: a dataset by name or folder, and the fixed and augmented batches that
probes, notebooks and the held-out loss measure on."""
from __future__ import annotations

import os

import torch

from .folders import FolderImages
from .photos import BuiltinPhotos
from ..core.config import BUILTIN_SETS
from ..core.seeds import derive_seed
from .shapes import BuiltinShapes
from .views import ViewDataset



def build_dataset(name_or_path: str | os.PathLike = "builtin", img_size: int = 32,
                  split: str = "train", train_transform: bool = True,
                  augment: str = "mae", seed: int = 0) -> ViewDataset | BuiltinShapes:
    """``"builtin"`` (photo tiles), ``"shapes"`` (labelled shapes over photo textures) or an
    image folder; ``train_transform`` False gives the eval transform, ``augment`` chooses the
    training one (:data:`AUGMENTATIONS`), ``seed`` is the dataset's (the views of plain
    indexing ``ds[i]``; the shapes' items)."""
    if str(name_or_path) == "shapes":
        return BuiltinShapes(img_size, split, train_transform, seed, augment=augment)
    if str(name_or_path) == "builtin":
        return BuiltinPhotos(img_size, split, train_transform, augment, seed)
    return FolderImages(name_or_path, img_size, split, train_transform, augment=augment,
                        seed=seed)


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


