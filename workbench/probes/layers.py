"""Where the useful representation lives: linear and kNN probes on every encoder block.

One forward pass per minibatch gives every block's output (``model.layer_features``: before the
final norm, mask ratio 0, eval mode, no grad); each block's tokens are pooled as the cls token
and the mean of the patch tokens, and a classifier is fitted per block and pooling on the
training images and scored on the held-out ones:

* ``linear``: multinomial logistic regression on standardised features, L2 strength chosen by
  stratified cross-validation on the training images (``linear.linear_predictions``);
* ``kNN``: DINO's weighted kNN vote (k = 20, T = 0.07; ``linear.weighted_knn_predictions``).

MFF's argument is that MAE's last layer wastes what shallower layers know; the per-block curves
show where the best layer is and whether fusion moves it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..models import eval_mode
from .linear import (FEATURE_BATCH, POOLS, linear_predictions, pool_tokens,
                     weighted_knn_predictions)

CLASSIFIERS = ("linear", "kNN")


@torch.no_grad()
def block_features(model, imgs: torch.Tensor, pools=POOLS, batch_size: int = FEATURE_BATCH
                   ) -> dict[str, list[torch.Tensor]]:
    """{pool: [block 0 features [n, D], block 1, ...]} (float32, CPU, rows in the order of
    ``imgs`` [n, C, H, W]); one forward per minibatch serves every block and pooling. Nothing is
    masked at ratio 0 and nothing is drawn: the caller's random state is untouched."""
    bad = [p for p in pools if p not in POOLS]
    if bad or not pools:
        raise ValueError(f"pools must be a non-empty subset of {POOLS}, got {list(pools)}")
    if imgs.ndim != 4 or imgs.shape[0] == 0:
        raise ValueError(f"expected images [B, C, H, W] with B >= 1, got {list(imgs.shape)}")
    device = next(model.parameters()).device
    chunks: dict[str, list[list[torch.Tensor]]] = {p: [] for p in pools}
    with eval_mode(model):
        for start in range(0, imgs.shape[0], batch_size):
            outs = model.layer_features(imgs[start:start + batch_size].to(device), mask_ratio=0.0)
            for p in pools:
                if not chunks[p]:
                    chunks[p] = [[] for _ in outs]
                for store, tokens in zip(chunks[p], outs):  # tokens [b, 1+N, D]
                    store.append(pool_tokens(tokens, p).float().cpu())
    return {p: [torch.cat(c) for c in per_block] for p, per_block in chunks.items()}


def layer_correct(train_feats, ytr, test_feats, yte, classifier: str = "linear",
                  seed: int = 0) -> np.ndarray:
    """[L, n_test] bool: per layer, which test images the classifier fitted on that layer's
    training features gets right. ``train_feats`` / ``test_feats``: lists over layers of
    [n, D] features."""
    if classifier not in CLASSIFIERS:
        raise ValueError(f"classifier must be one of {CLASSIFIERS}, got {classifier!r}")
    if len(train_feats) != len(test_feats) or not train_feats:
        raise ValueError(f"{len(train_feats)} training layers but {len(test_feats)} test layers")
    ytr, yte = np.asarray(ytr), np.asarray(yte)
    rows = []
    for xtr, xte in zip(train_feats, test_feats):
        xtr, xte = np.asarray(xtr, dtype=np.float32), np.asarray(xte, dtype=np.float32)
        if classifier == "linear":
            pred = linear_predictions(xtr, ytr, xte, seed=seed)
        else:
            pred = weighted_knn_predictions(torch.from_numpy(xtr), torch.from_numpy(ytr),
                                            torch.from_numpy(xte)).numpy()
        rows.append(pred == yte)
    return np.stack(rows)


@dataclass
class LayerProbes:
    """Per-block probe results of one model."""

    layers: list[int]  # block indices
    correct: dict[str, np.ndarray]  # "linear cls", "kNN mean", ... -> [L, n_test] bool
    n_train: int
    n_classes: int

    @property
    def accuracy(self) -> dict[str, np.ndarray]:
        """probe -> [L] accuracy in [0, 1]."""
        return {k: v.mean(axis=1) for k, v in self.correct.items()}

    @property
    def n_test(self) -> int:
        return next(iter(self.correct.values())).shape[1]

    def best_layer(self, probe: str) -> int:
        """The block with the highest accuracy for ``probe`` (the shallowest among ties)."""
        return self.layers[int(np.argmax(self.accuracy[probe]))]

    def to_dict(self) -> dict:
        return {"layers": self.layers, "n_train": self.n_train, "n_test": self.n_test,
                "n_classes": self.n_classes,
                "accuracy": {k: v.tolist() for k, v in self.accuracy.items()},
                "best_layer": {k: self.best_layer(k) for k in self.correct}}


def layer_probes(model, train, test, pools=POOLS, classifiers=CLASSIFIERS, seed: int = 0,
                 batch_size: int = FEATURE_BATCH) -> LayerProbes:
    """Linear and kNN accuracy of every encoder block's features (cls and mean-pooled).
    ``train`` / ``test``: (imgs [n, 3, S, S], labels [n]) pairs, e.g. ``data.fixed_batch``."""
    (xtr_imgs, ytr), (xte_imgs, yte) = train, test
    ftr = block_features(model, xtr_imgs, pools, batch_size)
    fte = block_features(model, xte_imgs, pools, batch_size)
    correct = {f"{c} {p}": layer_correct(ftr[p], ytr, fte[p], yte, c, seed)
               for c in classifiers for p in pools}
    return LayerProbes(list(range(len(ftr[pools[0]]))), correct, int(len(ytr)),
                       int(np.unique(np.asarray(ytr)).size))
