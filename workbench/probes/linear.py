"""Frozen-encoder probes: linear (logistic regression) and k-nearest-neighbour accuracy.

Features are ``model.encode(imgs)`` at mask ratio 0 (last block + final norm, as the MAE paper's
linear probe reads them; MFF's fusion only feeds the decoder and is not used), pooled as the cls
token (``pool="cls"``) or the mean of the patch tokens (``pool="mean"``).
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import torch

from ..models import eval_mode

POOLS = ("cls", "mean")
# images per forward pass when extracting features (here, and in the per-block, CKA and attention
# probes): on a CPU the tiny encoder ran 1.5x faster at 64 than at 256 (its activations stay in
# cache), and the features are the same
FEATURE_BATCH = 64
KNN_K = 20  # neighbours of a kNN vote (uniform here; DINO-weighted in the monitor and layer probes)


def pool_tokens(tokens: torch.Tensor, pool: str) -> torch.Tensor:
    """[B, 1+N, D] -> [B, D]: the cls token (``"cls"``) or the mean of the patch tokens."""
    return tokens[:, 0] if pool == "cls" else tokens[:, 1:].mean(dim=1)


def _batches(data) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """(imgs, labels) pair, or an iterable of such pairs."""
    if (isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor)
            and data[0].ndim == 4):
        return [tuple(data)]
    return data


@torch.no_grad()
def pooled_features(model, data, pools: tuple[str, ...] = POOLS,
                    batch_size: int = FEATURE_BATCH) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Frozen features of every pool in ``pools`` from one forward pass per batch ->
    ({pool: X [n, D] float32}, y [n]); eval mode, no grad (mode restored)."""
    unknown = [p for p in pools if p not in POOLS]
    if unknown or not pools:
        raise ValueError(f"pool must be one of {POOLS}, got {unknown[0] if unknown else pools!r}")
    device = next(model.parameters()).device
    xs: dict[str, list[np.ndarray]] = {p: [] for p in pools}
    ys = []
    with eval_mode(model):
        for imgs, labels in _batches(data):
            labels = torch.as_tensor(labels)
            if labels.shape[0] != imgs.shape[0]:
                raise ValueError(f"{imgs.shape[0]} images but {labels.shape[0]} labels")
            for s in range(0, imgs.shape[0], batch_size):
                tokens = model.encode(imgs[s:s + batch_size].to(device), mask_ratio=0.0)
                for p in pools:
                    xs[p].append(pool_tokens(tokens, p).float().cpu().numpy())  # [b, D]
            ys.append(labels.cpu().numpy())
    if not ys:
        raise ValueError("no images given")
    return {p: np.concatenate(x) for p, x in xs.items()}, np.concatenate(ys)


def extract_features(model, data, pool: str = "cls", batch_size: int = FEATURE_BATCH
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Frozen features -> (X [n, D] float32, y [n]); eval mode, no grad (mode restored)."""
    xs, y = pooled_features(model, data, (pool,), batch_size)
    return xs[pool], y


PROBE_CS = (0.01, 0.1, 1.0, 10.0)  # inverse L2 strengths tried by cross-validation
# Newton-CG minimises the same objective as scikit-learn's default L-BFGS; on probe-sized problems
# (hundreds of images, 192-D) it needed 2-3x less time, with the same predictions and C
SOLVER = "newton-cg"
CV_FOLDS = 5


def linear_predictions(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray,
                       C: float | str = "cv", max_iter: int = 1000, seed: int = 0) -> np.ndarray:
    """Predicted labels [n_test] of a multinomial logistic regression on standardised features.
    ``C="cv"`` (default) picks the inverse L2 strength from :data:`PROBE_CS` by stratified
    5-fold cross-validation on the training set only; a number fixes it."""
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    classes, counts = np.unique(ytr, return_counts=True)
    if classes.size < 2:
        raise ValueError("the training set needs at least two classes")
    if C == "cv":
        folds = min(CV_FOLDS, int(counts.min()))
        if folds < 2:
            raise ValueError(f"cross-validating C needs >= 2 training images per class; the "
                             f"smallest class has {int(counts.min())} (pass a number as C)")
        clf = LogisticRegressionCV(Cs=list(PROBE_CS), l1_ratios=(0.0,), scoring="accuracy",
                                   cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
                                   max_iter=max_iter, random_state=seed, solver=SOLVER,
                                   use_legacy_attributes=False)
    elif isinstance(C, (int, float)) and C > 0:
        clf = LogisticRegression(C=float(C), max_iter=max_iter, random_state=seed, solver=SOLVER)
    else:
        raise ValueError(f"C must be 'cv' or a positive number, got {C!r}")
    model = make_pipeline(StandardScaler(), clf)
    model.fit(xtr, ytr)
    return model.predict(xte)


def knn_predictions(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, k: int = KNN_K
                    ) -> np.ndarray:
    """Predicted labels [n_test] of a cosine k-nearest-neighbour vote (uniform weights,
    scikit-learn); ``k`` capped at the training size."""
    from sklearn.neighbors import KNeighborsClassifier

    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    knn = KNeighborsClassifier(n_neighbors=min(int(k), len(ytr)), metric="cosine",
                               algorithm="brute")
    knn.fit(xtr, ytr)
    return knn.predict(xte)


def knn_accuracy(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, yte: np.ndarray,
                 k: int = KNN_K) -> float:
    """Test accuracy of :func:`knn_predictions`."""
    return float(np.mean(knn_predictions(xtr, ytr, xte, k) == yte))


def weighted_knn_predictions(xtr: torch.Tensor, ytr: torch.Tensor, xte: torch.Tensor,
                             k: int = 20, temperature: float = 0.07) -> torch.Tensor:
    """DINO's weighted kNN (Caron et al. 2021; Wu et al. 2018): cosine similarity to the training
    features, the ``k`` most similar vote for their class with weight exp(similarity / T), the
    class with the largest total wins. xtr [n, D], ytr [n] int, xte [m, D] -> predictions [m]."""
    if int(k) < 1 or temperature <= 0:
        raise ValueError(f"k must be >= 1 and temperature > 0, got k={k}, T={temperature}")
    xtr = torch.nn.functional.normalize(torch.as_tensor(xtr, dtype=torch.float32), dim=1)
    xte = torch.nn.functional.normalize(torch.as_tensor(xte, dtype=torch.float32), dim=1)
    ytr = torch.as_tensor(ytr, dtype=torch.long)
    sim, idx = (xte @ xtr.T).topk(min(int(k), len(ytr)), dim=1)  # [m, k]
    votes = torch.zeros(len(xte), int(ytr.max()) + 1)  # [m, classes]
    votes.scatter_add_(1, ytr[idx], (sim / temperature).exp())
    return votes.argmax(dim=1)


def _features(model, train, test, pool: str, batch_size: int):
    return (*extract_features(model, train, pool, batch_size),
            *extract_features(model, test, pool, batch_size))


def linear_probe(model, train, test, pool: str = "cls", C: float | str = "cv",
                 max_iter: int = 1000, batch_size: int = FEATURE_BATCH, seed: int = 0) -> float:
    """Test accuracy in [0, 1] of a multinomial logistic regression (scikit-learn; L2 strength
    ``1/C``, chosen by cross-validation by default) trained on standardised frozen features of
    ``train``. ``train`` / ``test``: an (imgs, labels) pair of tensors or an iterable of such
    batches."""
    return float(probe_correct(model, train, test, pool, C, max_iter, batch_size, seed).mean())


def probe_correct(model, train, test, pool: str = "cls", C: float | str = "cv",
                  max_iter: int = 1000, batch_size: int = FEATURE_BATCH,
                  seed: int = 0) -> np.ndarray:
    """Per test image, whether :func:`linear_probe`'s classifier gets it right ([n_test] bool):
    the paired data for comparing two models on the same test images."""
    xtr, ytr, xte, yte = _features(model, train, test, pool, batch_size)
    return linear_predictions(xtr, ytr, xte, C, max_iter, seed) == yte


def knn_probe(model, train, test, k: int = KNN_K, pool: str = "cls",
              batch_size: int = FEATURE_BATCH) -> float:
    """Test accuracy in [0, 1] of a k-nearest-neighbour vote (cosine distance, uniform weights,
    scikit-learn) over frozen features of ``train``; ``k`` is capped at the training-set size."""
    return knn_accuracy(*_features(model, train, test, pool, batch_size), k)


def probe_results(model, train, test, seed: int = 0) -> dict[str, np.ndarray]:
    """The frozen-feature comparison of the linear-probe notebook, per test image right or
    wrong ([n_test] bool each): a linear probe on the cls token (``"linear cls"``, the same
    predictions as :func:`probe_correct` with this seed) and on mean-pooled patch tokens
    (``"linear mean"``), and a kNN vote on the cls token (``"kNN cls"``). One forward pass per
    image serves all three."""
    (xtr, ytr), (xte, yte) = (pooled_features(model, d) for d in (train, test))
    return {"linear cls": linear_predictions(xtr["cls"], ytr, xte["cls"], seed=seed) == yte,
            "linear mean": linear_predictions(xtr["mean"], ytr, xte["mean"], seed=seed) == yte,
            "kNN cls": knn_predictions(xtr["cls"], ytr, xte["cls"]) == yte}


def probe_scores(model, train, test, seed: int = 0) -> dict[str, float]:
    """Accuracy in [0, 1] of each of :func:`probe_results`' probes."""
    return {name: float(c.mean()) for name, c in probe_results(model, train, test, seed).items()}
