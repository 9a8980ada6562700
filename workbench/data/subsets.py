"""Few-shot training sets: a class-balanced, seeded share of a labelled dataset (MFF's 1 % and
10 % of ImageNet's labels)."""
from __future__ import annotations

import torch
from torch.utils.data import Dataset

from ..core.seeds import derive_seed

SUBSET = 8  # derive_seed purpose of a class's draw


def balanced_subset(data, fraction: float, seed: int = 0) -> list[int]:
    """Indices of ``data`` keeping ``fraction`` of each class (rounded, at least one image per
    class that has any), drawn by a seeded permutation per class; sorted. ``data`` has
    ``classes`` and ``label(i)``."""
    if not 0 < fraction <= 1:
        raise ValueError(f"label_fraction must be in (0, 1], got {fraction!r}")
    by_class: dict[int, list[int]] = {c: [] for c in range(len(data.classes))}
    for i in range(len(data)):
        by_class.setdefault(int(data.label(i)), []).append(i)
    kept = []
    for c, members in by_class.items():
        if not members:
            continue
        n = max(1, round(fraction * len(members)))
        g = torch.Generator().manual_seed(derive_seed(seed, c, SUBSET))
        kept += [members[j] for j in torch.randperm(len(members), generator=g)[:n].tolist()]
    return sorted(kept)


class LabelSubset(Dataset):
    """The items ``indices`` of ``base``, indexed 0..n-1, as every workbench dataset is (``ds[i]``
    or ``ds[(i, aug_seed)]``); ``classes`` are the base's."""

    def __init__(self, base, indices: list[int]):
        self.base, self.indices = base, list(indices)
        self.classes = base.classes

    def __len__(self) -> int:
        return len(self.indices)

    def label(self, index: int) -> int:
        return int(self.base.label(self.indices[index]))

    def class_counts(self) -> dict[str, int]:
        """Images per class name (every class, zeros included)."""
        counts = {name: 0 for name in self.classes}
        for i in range(len(self)):
            counts[self.classes[self.label(i)]] += 1
        return counts

    def __getitem__(self, key):
        index, aug = key if isinstance(key, tuple) else (key, None)
        base_index = self.indices[int(index)]
        return self.base[base_index] if aug is None else self.base[(base_index, aug)]
