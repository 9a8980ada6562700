"""Linear CKA against independent answers: explicit HSIC with a centring matrix, the unbiased
HSIC as a U-statistic over quadruples, invariances, and a tiny model's layer-by-layer matrix."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from workbench import build_model
from workbench.data import fixed_batch
from workbench.probes import cka_matrix, layer_features, linear_cka


def feats(n, d, seed):
    return np.random.default_rng(seed).standard_normal((n, d))


def related(n=60, seed=0):
    """x [n, 8] and y [n, 5] that share a component plus noise."""
    r = np.random.default_rng(seed)
    x = r.standard_normal((n, 8))
    y = x[:, :5] @ r.standard_normal((5, 5)) + 0.7 * r.standard_normal((n, 5)) + 3.0
    return x, y


def hsic_centring(x, y):
    """Biased HSIC tr(K H L H) / (n-1)^2 with the explicit centring matrix H = I - 11^T/n."""
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    k, l = x @ x.T, y @ y.T
    return np.trace(k @ h @ l @ h) / (n - 1) ** 2


def hsic_u_statistic(x, y):
    """Song et al. (2012) unbiased HSIC as the U-statistic over ordered distinct quadruples
    (i, j, q, r): mean of k_ij l_ij + k_ij l_qr - 2 k_ij l_iq."""
    k, l = x @ x.T, y @ y.T
    total, count = 0.0, 0
    for i, j, q, r in itertools.permutations(range(x.shape[0]), 4):
        total += k[i, j] * l[i, j] + k[i, j] * l[q, r] - 2 * k[i, j] * l[i, q]
        count += 1
    return total / count


def cka_from(hsic, x, y):
    return hsic(x, y) / np.sqrt(hsic(x, x) * hsic(y, y))


def test_biased_equals_centring_matrix_hsic():
    x, y = related()
    assert linear_cka(x, y) == pytest.approx(cka_from(hsic_centring, x, y), rel=1e-10)


def test_unbiased_equals_u_statistic():
    x, y = related(n=8, seed=1)
    assert linear_cka(x, y, unbiased=True) == pytest.approx(
        cka_from(hsic_u_statistic, x, y), rel=1e-8)


@pytest.mark.parametrize("unbiased", [False, True])
def test_self_similarity_is_one(unbiased):
    x = feats(40, 7, 2)
    assert linear_cka(x, x, unbiased) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(torch.tensor(x, dtype=torch.float32), x, unbiased) == pytest.approx(
        1.0, abs=1e-6)


@pytest.mark.parametrize("unbiased", [False, True])
def test_orthogonal_and_isotropic_scale_invariance(unbiased):
    x, y = related(seed=3)
    q, _ = np.linalg.qr(np.random.default_rng(4).standard_normal((8, 8)))
    base = linear_cka(x, y, unbiased)
    assert 0.2 < base < 1.0
    assert linear_cka(x @ q, y, unbiased) == pytest.approx(base, rel=1e-10)
    assert linear_cka(x, 17.0 * y, unbiased) == pytest.approx(base, rel=1e-10)
    assert linear_cka(0.01 * x @ q, y, unbiased) == pytest.approx(base, rel=1e-10)
    assert linear_cka(y, x, unbiased) == pytest.approx(base, rel=1e-12)


def test_independent_features_unbiased_near_zero_biased_positive():
    x, y = feats(500, 50, 5), feats(500, 50, 6)
    assert abs(linear_cka(x, y, unbiased=True)) < 0.05
    assert linear_cka(x, y) > 0.07  # the biased form's small-n bias, about d/n here


def test_errors_are_named():
    with pytest.raises(ValueError, match="same number of examples"):
        linear_cka(feats(10, 3, 0), feats(11, 3, 0))
    with pytest.raises(ValueError, match="2-D"):
        linear_cka(np.zeros((4, 3, 2)), feats(4, 3, 0))
    with pytest.raises(ValueError, match="n > 3"):
        linear_cka(feats(3, 2, 0), feats(3, 2, 1), unbiased=True)
    with pytest.raises(ValueError, match="undefined"):
        linear_cka(np.ones((10, 3)), feats(10, 3, 0))
    with pytest.raises(ValueError, match="at least one layer"):
        cka_matrix([], [feats(10, 3, 0)])
    with pytest.raises(ValueError, match="same number of examples"):
        cka_matrix([feats(10, 3, 0)], [feats(10, 3, 0), feats(9, 3, 0)])


@pytest.fixture(scope="module")
def tiny_feats():
    torch.manual_seed(0)
    model = build_model("mae", "tiny", depth=3)
    imgs = fixed_batch("builtin", 32, 16, "heldout", 0)[0]
    return model, imgs


def test_cka_matrix_of_tiny_model(tiny_feats):
    model, imgs = tiny_feats
    model.train()
    feats_mean = layer_features(model, imgs, batch_size=5)  # minibatches of 5, 5, 5, 1
    assert model.training  # mode restored
    assert len(feats_mean) == 3 and all(f.shape == (16, 192) for f in feats_mean)
    with torch.no_grad():  # one pass over all images gives the same rows
        ref = model.eval().layer_features(imgs, mask_ratio=0.0)
    for f, r in zip(feats_mean, ref):
        torch.testing.assert_close(f, r[:, 1:].mean(1), atol=1e-5, rtol=1e-5)
    cls = layer_features(model, imgs, pool="cls")
    torch.testing.assert_close(cls[2], ref[2][:, 0], atol=1e-5, rtol=1e-5)
    for unbiased in (False, True):
        m = cka_matrix(feats_mean, feats_mean, unbiased)
        assert m.shape == (3, 3)
        np.testing.assert_allclose(np.diag(m), 1.0, atol=1e-10)
        np.testing.assert_allclose(m, m.T, atol=1e-12)
        assert m[0, 2] == pytest.approx(linear_cka(feats_mean[0], feats_mean[2], unbiased))
    assert cka_matrix(feats_mean, cls).shape == (3, 3)
    with pytest.raises(ValueError, match="pool"):
        layer_features(model, imgs, pool="max")
