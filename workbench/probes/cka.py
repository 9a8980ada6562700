"""Linear centred kernel alignment (CKA) between layer representations.

Biased (Kornblith, Norouzi, Lee & Hinton, ICML 2019, "Similarity of neural network
representations revisited"), for features X [n, d1], Y [n, d2] centred over the n examples:

    CKA(X, Y) = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)
              = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))

with linear kernels K = X X^T, L = Y Y^T and HSIC = tr(K H L H) / (n-1)^2, H = I - 11^T/n.

Unbiased (``unbiased=True``; Nguyen, Raghu & Kornblith, ICLR 2021, "Do wide and deep networks
learn the same things?"): the same ratio with the unbiased HSIC estimator of Song, Smola,
Gretton, Bedo & Borgwardt (JMLR 2012), for K~, L~ = K, L with their diagonals set to zero:

    HSIC_u(K, L) = [tr(K~ L~) + (1^T K~ 1)(1^T L~ 1) / ((n-1)(n-2)) - 2/(n-2) 1^T K~ L~ 1]
                   / (n (n-3)),

which needs n > 3 and is unchanged by centring the features. It removes the positive bias of
the biased form at small n / large d, so independent features score near 0. Both forms are
computed in float64 from the features (no n x n Gram matrix) and are invariant to orthogonal
transforms and isotropic scaling of either side.
"""
from __future__ import annotations

import numpy as np
import torch

from .layers import block_features
from .linear import FEATURE_BATCH, POOLS


def _as_matrix(x, name: str) -> torch.Tensor:
    """torch / numpy [n, d] -> float64 CPU tensor, centred over the n rows."""
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x.detach())
    if t.ndim != 2:
        raise ValueError(f"{name} must be a 2-D feature matrix [n, d], got shape {list(t.shape)}")
    t = t.to("cpu", torch.float64)
    return t - t.mean(dim=0, keepdim=True)


class _Stats:
    """What the unbiased estimator needs of one centred feature matrix x [n, d]."""

    def __init__(self, x: torch.Tensor):
        self.x = x  # [n, d] centred
        self.diag = (x * x).sum(dim=1)  # [n] diag of K = x x^T
        self.row = x @ x.sum(dim=0) - self.diag  # [n] K~ 1 (row sums of K without diagonal)
        self.total = self.row.sum()  # 1^T K~ 1


def _cross(a: _Stats, b: _Stats) -> torch.Tensor:
    """tr(K L) = ||X^T Y||_F^2 for centred X, Y."""
    return (a.x.T @ b.x).square().sum()


def _hsic_u(a: _Stats, b: _Stats, tr_kl: torch.Tensor) -> torch.Tensor:
    """Song et al. (2012) unbiased HSIC of linear kernels, from features only."""
    n = a.x.shape[0]
    tr = tr_kl - (a.diag * b.diag).sum()  # tr(K~ L~)
    return (tr + a.total * b.total / ((n - 1) * (n - 2))
            - 2.0 / (n - 2) * (a.row @ b.row)) / (n * (n - 3))


def _similarity(a: _Stats, b: _Stats, unbiased: bool) -> torch.Tensor:
    """HSIC(K, L) up to the factor 1/(n-1)^2 common to all biased terms (it cancels in CKA)."""
    kl = _cross(a, b)
    return _hsic_u(a, b, kl) if unbiased else kl


def _check_pair(x: torch.Tensor, y: torch.Tensor, unbiased: bool) -> None:
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same number of examples (rows), got "
                         f"{x.shape[0]} and {y.shape[0]}")
    if unbiased and x.shape[0] <= 3:
        raise ValueError(f"the unbiased HSIC estimator needs n > 3 examples, got n={x.shape[0]}")


def _ratio(sim: torch.Tensor, self_x: torch.Tensor, self_y: torch.Tensor) -> float:
    """CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))."""
    if not (self_x > 0 and self_y > 0):
        raise ValueError("CKA is undefined: a feature matrix has zero (or, for the unbiased "
                         "estimate, negative) self-similarity, e.g. constant over the examples")
    return float(sim / (self_x * self_y).sqrt())


def linear_cka(x, y, unbiased: bool = False) -> float:
    """Linear CKA of features x [n, d1] and y [n, d2] (torch or numpy; float64): Kornblith et al.
    (2019) on centred features, or with ``unbiased=True`` the unbiased-HSIC form of Nguyen et al.
    (2021). See the module docstring for both definitions."""
    xc, yc = _as_matrix(x, "x"), _as_matrix(y, "y")
    _check_pair(xc, yc, unbiased)
    a, b = _Stats(xc), _Stats(yc)
    return _ratio(_similarity(a, b, unbiased), _similarity(a, a, unbiased),
                  _similarity(b, b, unbiased))


def cka_matrix(feats_a, feats_b, unbiased: bool = False) -> np.ndarray:
    """[La, Lb] linear CKA between every layer of ``feats_a`` and every layer of ``feats_b``
    (lists of [n, d] features of the same n examples, e.g. from :func:`layer_features`)."""
    if len(feats_a) == 0 or len(feats_b) == 0:
        raise ValueError("cka_matrix needs at least one layer on each side")
    sa = [_Stats(_as_matrix(f, f"feats_a[{i}]")) for i, f in enumerate(feats_a)]
    sb = [_Stats(_as_matrix(f, f"feats_b[{j}]")) for j, f in enumerate(feats_b)]
    for s in sa + sb:
        _check_pair(sa[0].x, s.x, unbiased)

    self_a = [_similarity(s, s, unbiased) for s in sa]  # [La]
    self_b = [_similarity(s, s, unbiased) for s in sb]  # [Lb]
    out = np.empty((len(sa), len(sb)))
    for i, a in enumerate(sa):
        for j, b in enumerate(sb):
            out[i, j] = _ratio(_similarity(a, b, unbiased), self_a[i], self_b[j])
    return out


def layer_features(model, imgs: torch.Tensor, batch_size: int = FEATURE_BATCH,
                   pool: str = "mean") -> list[torch.Tensor]:
    """Every encoder block's output (``model.layer_features``: before the final norm, at mask
    ratio 0, eval mode, no grad), pooled per image as the mean of the patch tokens
    (``pool="mean"``) or the cls token (``"cls"``) -> list over blocks of [n, D] float32 CPU
    tensors, rows in the order of ``imgs`` [n, C, H, W] (``layers.block_features``)."""
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
    return block_features(model, imgs, (pool,), batch_size)[pool]
