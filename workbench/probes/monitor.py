"""The feature monitor: during pretraining, how well the encoder's frozen features separate a
fixed labelled held-out set, so that a run that learns and a stuck one look different while
they train.

Two readings of the same mean-pooled features (mask ratio 0) at each measurement: DINO's
weighted kNN vote (k = 20, T = 0.07), logged as ``knn_acc``, and a logistic-regression probe
with a fixed L2 strength (:data:`MONITOR_C`), logged as ``probe_acc`` -- the probe the learning
criterion uses (``probes.learning``), at the monitor's smaller size. Mean pooling, not the cls
token: on the tiny models the cls token's kNN accuracy did not move in a run whose linear probe
gained 14 points (``shared/DESIGN.md``); MAE's kNN accuracy is weak in general, the probe is the
reading to watch.

The labelled images are the built-in shapes (classes a photo's colours do not give away) or,
when the run trains on an image folder with classes, that folder: the bank from its training
split, the queries from its held-out split. Measuring draws nothing from the global generators,
so a run's weights are the same with the monitor on or off.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from ..data import BUILTIN_SETS, fixed_batch
from .linear import (FEATURE_BATCH, KNN_K, extract_features, linear_predictions,
                             weighted_knn_predictions)

KNN_TEMPERATURE = 0.07  # DINO's
MONITOR_POOL = "mean"
MONITOR_C = 1.0  # fixed inverse L2 strength of the monitor's probe (no cross-validation: speed)


@dataclass
class KnnMonitor:
    bank: torch.Tensor  # [n, 3, S, S] labelled training images (eval transform)
    bank_labels: torch.Tensor  # [n]
    queries: torch.Tensor  # [m, 3, S, S] held-out images
    query_labels: torch.Tensor  # [m]
    batch_size: int = FEATURE_BATCH  # images per forward pass
    pool: str = MONITOR_POOL

    def features(self, model, imgs: torch.Tensor) -> torch.Tensor:
        """Pooled features [n, D] of ``imgs`` (``probes.extract_features``: mask ratio 0, eval
        mode restored, no grad, nothing drawn from the global generators)."""
        labels = torch.zeros(len(imgs), dtype=torch.long)  # unused: the bank's labels are kept
        return torch.from_numpy(extract_features(model, (imgs, labels), self.pool,
                                                 self.batch_size)[0])

    def measure(self, model) -> dict[str, float]:
        """``knn_acc`` and ``probe_acc``: held-out accuracy in [0, 1] of the weighted kNN vote
        and of the fixed-C linear probe, from one forward pass over bank and queries."""
        bank, queries = self.features(model, self.bank), self.features(model, self.queries)
        knn = weighted_knn_predictions(bank, self.bank_labels, queries, KNN_K, KNN_TEMPERATURE)
        probe = linear_predictions(bank.numpy(), self.bank_labels.numpy(), queries.numpy(),
                                   C=MONITOR_C)
        truth = self.query_labels
        return {"knn_acc": float((knn == truth).float().mean()),
                "probe_acc": float((torch.from_numpy(probe) == truth).float().mean())}

    def accuracy(self, model) -> float:
        """Held-out accuracy in [0, 1] of the weighted kNN vote over the bank's features."""
        return self.measure(model)["knn_acc"]


def knn_data_for(data: str, knn_data: str | None) -> str:
    """The labelled images of the monitor: ``knn_data`` if given, else the run's image folder,
    else the built-in shapes (the built-in photos' labels are only photo identity)."""
    if knn_data is not None:
        return knn_data
    return "shapes" if str(data) in BUILTIN_SETS else str(data)


def build_monitor(data: str, knn_data: str | None, img_size: int, n_images: int
                  ) -> KnnMonitor | None:
    """The monitor on ``n_images`` labelled images, half a bank from the training split, half
    queries from the held-out split; None (with a warning) when the labelled data cannot serve
    (no held-out split, fewer than two classes)."""
    name = knn_data_for(data, knn_data)
    try:
        bank, bank_labels = fixed_batch(name, img_size, n_images // 2, "train", 0)
        queries, query_labels = fixed_batch(name, img_size, n_images // 2, "heldout", 0)
    except ValueError as e:
        warnings.warn(f"kNN monitor off: {e} (set knn_data to a labelled folder or 'shapes')")
        return None
    if bank_labels.unique().numel() < 2:
        warnings.warn(f"kNN monitor off: {name} has fewer than two classes")
        return None
    return KnnMonitor(bank, bank_labels, queries, query_labels)
