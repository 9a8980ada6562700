"""Top-k Hessian eigenvalues against exact answers: clustered tops, repeated eigenvalues,
negative-dominant spectra (quadratic forms with a known Hessian, n above DENSE_LIMIT), and a
tiny MAE on a restricted parameter set (exact Hessian by autograd + eigvalsh)."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from workbench import build_model
from workbench.probes import top_hessian_eigenvalues
from workbench.linalg import exact_hessian
from workbench.linalg.topk import DENSE_LIMIT

N = 300
assert N > DENSE_LIMIT  # the Lanczos path, not the dense one
KS = (1, 2, 3, 4, 5)


def by_magnitude(lam: torch.Tensor) -> torch.Tensor:
    return lam[torch.argsort(lam.abs(), descending=True, stable=True)]


def quadratic_with_top(top, seed):
    """x ↦ 0.5 xᵀAx, A = Q diag(λ) Qᵀ: ``top`` then a bulk uniform in [-0.5, 0.5]."""
    g = torch.Generator().manual_seed(seed)
    bulk = torch.rand(N - len(top), generator=g, dtype=torch.float64) - 0.5
    lam = torch.cat([torch.tensor(top, dtype=torch.float64), bulk])
    q, _ = torch.linalg.qr(torch.randn(N, N, generator=g, dtype=torch.float64))
    a = q @ torch.diag(lam) @ q.T
    x = nn.Parameter(torch.randn(N, generator=g, dtype=torch.float64))
    return (lambda: 0.5 * x @ a @ x), x, by_magnitude(lam)


def assert_top_k(loss, params, exact, k, tol, seed, **kw):
    got = top_hessian_eigenvalues(loss, params, k=k, tol=tol, seed=seed, **kw)
    err = (got - exact[:k]).abs() / exact[:k].abs()
    assert (err <= tol).all(), (k, seed, got.tolist(), exact[:k].tolist())


SPECTRA = {
    # relative gaps 1e-3 (tol 1e-4 below) and 3e-3 after an isolated top (tol 1e-3)
    "cluster_gap1e-3": ([1.0 - 1e-3 * i for i in range(8)], 1e-4),
    "isolated_then_cluster_gap3e-3": ([1.0] + [0.95 - 3e-3 * i for i in range(7)], 1e-3),
    "double_top": ([1.0, 1.0, 0.9, 0.8, 0.7, 0.6], 1e-3),
    "triple_top": ([1.0, 1.0, 1.0, 0.9, 0.8, 0.7], 1e-3),
    "double_inside": ([1.0, 0.95, 0.95, 0.9, 0.9, 0.85], 1e-3),
    "negative_dominant_cluster": ([-1.0, -0.997, 0.994, -0.991, 0.988, -0.985, 0.9], 1e-3),
}


@pytest.mark.parametrize("name", sorted(SPECTRA))
def test_quadratic_top_k_matches_exact(name):
    top, tol = SPECTRA[name]
    for seed in range(4):
        loss, x, exact = quadratic_with_top(top, seed)
        for k in KS:
            assert_top_k(loss, [x], exact, k, tol, seed)


def test_block_size_sets_the_multiplicity_found():
    """Single-vector Lanczos (block=1) finds one copy of a repeated eigenvalue; block ≥ the
    multiplicity finds them all."""
    loss, x, exact = quadratic_with_top([1.0, 1.0, 1.0, 0.9, 0.8], seed=0)
    one = top_hessian_eigenvalues(loss, [x], k=3, tol=1e-6, block=1)
    assert one[0] == pytest.approx(1.0, rel=1e-6) and one[1] < 0.95  # copies skipped
    three = top_hessian_eigenvalues(loss, [x], k=3, tol=1e-6, block=3)
    assert torch.allclose(three, exact[:3], rtol=1e-6)
    with pytest.raises(ValueError, match="block"):
        top_hessian_eigenvalues(loss, [x], k=2, block=0)


MAE_PARAMS = ("blocks.1.mlp.fc2.weight", "decoder_pred.weight")


def tiny_mae_problem(seed):
    """Width-16 MAE, fixed mask, Hessian restricted to two weight matrices (1,792 parameters)."""
    torch.manual_seed(seed)
    model = build_model("mae", "tiny", img_size=16, embed_dim=16, num_heads=2, depth=2,
                        decoder_embed_dim=16, decoder_num_heads=2, decoder_depth=1).eval()
    imgs = torch.randn(8, 3, 16, 16)
    named = dict(model.named_parameters())
    params = [named[n] for n in MAE_PARAMS]
    hess = exact_hessian(model, MAE_PARAMS, lambda call: call(imgs, seed=0).loss)
    exact = by_magnitude(torch.linalg.eigvalsh(hess.double()))
    return (lambda: model(imgs, seed=0).loss), params, exact


@pytest.mark.parametrize("seed", range(6))
def test_tiny_mae_restricted_top_k_matches_exact_hessian(seed):
    loss, params, exact = tiny_mae_problem(seed)
    assert sum(p.numel() for p in params) == 1792
    for k in KS:
        assert_top_k(loss, params, exact, k, 1e-3, seed=0)
