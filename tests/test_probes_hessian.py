"""Hessian eigenvalues: known spectra, an exact dense Hessian, pyhessian, and the MAE loss."""
from __future__ import annotations

import json
import warnings

import pytest
import torch
import torch.nn as nn

from workbench import build_model
from workbench.probes import (hessian_spectrum, select_parameters, spectrum_summary,
                              top_hessian_eigenvalues)
from problems import quadratic  # noqa: E402

SMALL = dict(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2,
             decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)


def known_spectrum(n=150):
    lam = torch.linspace(-1.0, 1.0, n, dtype=torch.float64)
    lam[:4] = torch.tensor([-9.0, 6.0, -4.0, 3.0], dtype=torch.float64)
    return lam


@pytest.mark.parametrize("backend", ["lanczos", "pyhessian"])
def test_quadratic_largest_magnitude_with_signs(backend):
    loss, x, _ = quadratic(known_spectrum())
    eigs = top_hessian_eigenvalues(loss, [x], k=3, tol=1e-9, max_iter=2000, backend=backend)
    # by magnitude: the negative -9 comes first, and -4 beats 3
    assert torch.allclose(eigs, torch.tensor([-9.0, 6.0, -4.0], dtype=torch.float64), rtol=1e-5)


def test_quadratic_positive_definite_and_dense_path():
    loss, x, _ = quadratic([5.0, 2.0, 1.0, 0.5, 0.1])  # 5 parameters: dense fallback, exact
    res = top_hessian_eigenvalues(loss, [x], k=2, return_info=True)
    assert torch.allclose(res.eigenvalues, torch.tensor([5.0, 2.0], dtype=torch.float64))
    assert res.num_hvps == 5 and res.num_params == 5
    d = json.loads(json.dumps(res.to_dict()))
    assert d["eigenvalues"] == res.eigenvalues.tolist() and d["num_hvps"] == 5
    assert d["num_params"] == 5 and d["backend"] == res.backend and "eigenvectors" not in d


def test_lanczos_uses_fewer_hvps_than_power_iteration():
    lam = known_spectrum(300)
    lam[1] = 8.5  # a small gap: power iteration converges slowly, Lanczos does not
    loss, x, _ = quadratic(lam)
    ours = top_hessian_eigenvalues(loss, [x], k=1, tol=1e-8, return_info=True)
    power = top_hessian_eigenvalues(loss, [x], k=1, tol=1e-8, max_iter=2000,
                                    backend="pyhessian", return_info=True)
    assert ours.eigenvalues.item() == pytest.approx(-9.0, rel=1e-6)
    assert power.eigenvalues.item() == pytest.approx(-9.0, rel=1e-4)
    assert 0 < ours.num_hvps < power.num_hvps


def test_small_mlp_matches_exact_hessian():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    x, y = torch.randn(16, 3, dtype=torch.float64), torch.randn(16, 2, dtype=torch.float64)
    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for p in net.parameters()]
    flat0 = torch.cat([p.detach().reshape(-1) for p in net.parameters()])

    def loss_of_flat(flat):
        ps, i = {}, 0
        for n, s in zip(names, shapes):
            ps[n] = flat[i:i + s.numel()].view(s)
            i += s.numel()
        out = torch.func.functional_call(net, ps, (x,))
        return ((out - y) ** 2).mean()

    exact = torch.linalg.eigvalsh(torch.autograd.functional.hessian(loss_of_flat, flat0))
    exact = exact[torch.argsort(exact.abs(), descending=True)][:4]
    assert flat0.numel() == 32  # dense path; force Lanczos too by lowering the dense limit
    got = top_hessian_eigenvalues(lambda: ((net(x) - y) ** 2).mean(), list(net.parameters()), k=4)
    assert torch.allclose(got, exact, rtol=1e-8, atol=1e-10)
    import workbench.linalg.topk as T
    old, T.DENSE_LIMIT = T.DENSE_LIMIT, 0
    try:
        got = top_hessian_eigenvalues(lambda: ((net(x) - y) ** 2).mean(), list(net.parameters()),
                                      k=4, tol=1e-10)
    finally:
        T.DENSE_LIMIT = old
    assert torch.allclose(got, exact, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("backend", ["lanczos", "pyhessian"])
def test_parameters_without_gradient(backend):
    torch.manual_seed(0)
    used, unused = nn.Linear(4, 1).double(), nn.Linear(4, 1).double()
    x = torch.randn(32, 4, dtype=torch.float64)
    bias_only = nn.Parameter(torch.zeros(1, dtype=torch.float64))  # linear in the loss: H = 0
    loss = lambda: (torch.tanh(used(x)) ** 2).mean() + bias_only.sum()  # noqa: E731
    params = list(used.parameters()) + list(unused.parameters()) + [bias_only]
    got = top_hessian_eigenvalues(loss, params, k=1, tol=1e-10, max_iter=1000, backend=backend)
    ref = top_hessian_eigenvalues(loss, list(used.parameters()), k=1)
    assert torch.isfinite(got).all() and got.item() == pytest.approx(ref.item(), rel=1e-4)
    assert unused.weight.grad is None and used.weight.grad is None  # nothing left in .grad


def test_mae_hvp_with_fused_attention_enabled():
    torch.manual_seed(0)
    model = build_model("mae", **SMALL).eval()
    assert all(blk.attn.fused_attn for blk in model.blocks)  # SDPA path, no double backward
    imgs = torch.randn(4, 3, 16, 16)
    eigs = top_hessian_eigenvalues(lambda: model(imgs, seed=0).loss,
                                   select_parameters(model), k=2, tol=1e-3)
    assert eigs.shape == (2,) and torch.isfinite(eigs).all() and eigs.abs()[0] >= eigs.abs()[1]


def test_backends_agree_on_tiny_mae():
    torch.manual_seed(0)
    model = build_model("mae", **SMALL).eval()
    imgs = torch.randn(8, 3, 16, 16)
    loss = lambda: model(imgs, seed=0).loss  # noqa: E731
    params = select_parameters(model)
    ours = top_hessian_eigenvalues(loss, params, k=1, tol=1e-8, max_iter=1000)
    theirs = top_hessian_eigenvalues(loss, params, k=1, tol=1e-7, max_iter=2000,
                                     backend="pyhessian")
    assert theirs.item() == pytest.approx(ours.item(), rel=1e-3)


def test_hessian_spectrum_mff_encoder_subset_and_summary():
    torch.manual_seed(0)
    model = build_model("mff", **SMALL)
    model.train()
    batches = [torch.randn(4, 3, 16, 16) for _ in range(2)]
    eigs = hessian_spectrum(model, batches, k=2, params="encoder", tol=1e-3, progress=False)
    assert eigs.shape == (2, 2) and torch.isfinite(eigs).all()
    assert model.training  # mode restored
    again = hessian_spectrum(model, batches[:1], k=2, params="encoder", tol=1e-3, progress=False)
    assert torch.allclose(again[0], eigs[0], rtol=1e-3)  # seeded mask per batch: reproducible
    enc = select_parameters(model, "encoder")
    assert all(not any(p is q for q in enc) for p in select_parameters(model, "decoder"))
    s = spectrum_summary(torch.tensor([[3.0, -1.0], [2.0, 1.0]]))
    assert s == {"nep": 0.25, "ape": 2.0, "max": 3.0, "median": 1.5, "count": 4}


def test_bad_input():
    loss, x, _ = quadratic([1.0, 2.0])
    with pytest.raises(ValueError, match="backend"):
        top_hessian_eigenvalues(loss, [x], backend="power")
    with pytest.raises(ValueError, match="k must be"):
        top_hessian_eigenvalues(loss, [x], k=0)
    with pytest.raises(ValueError, match="params"):
        select_parameters(build_model("mae", **SMALL), "everything")


def test_thick_restart_start_vectors_and_eigenvectors():
    lam = known_spectrum(200)
    loss, x, _ = quadratic(lam)
    for start in ("auto", "random", "gradient", torch.randn(2, 200, dtype=torch.float64)):
        # ncv=8 forces several thick restarts for k=4
        r = top_hessian_eigenvalues(loss, [x], k=4, tol=1e-10, ncv=8, start=start,
                                    return_info=True)
        assert torch.allclose(r.eigenvalues, torch.tensor([-9.0, 6.0, -4.0, 3.0],
                                                          dtype=torch.float64), rtol=1e-8)
        v = r.eigenvectors
        assert v.shape == (4, 200)
        assert torch.allclose(v @ v.T, torch.eye(4, dtype=torch.float64), atol=1e-8)
    with pytest.raises(ValueError, match="start"):
        top_hessian_eigenvalues(loss, [x], k=1, start="best")


def test_residual_stopping_rule_bounds_the_error():
    lam = known_spectrum(300)
    lam[1] = 8.5
    loss, x, _ = quadratic(lam)
    for tol in (1e-1, 1e-2, 1e-3):
        r = top_hessian_eigenvalues(loss, [x], k=2, tol=tol, start="random", return_info=True)
        err = ((r.eigenvalues - torch.tensor([-9.0, 8.5], dtype=torch.float64)).abs()
               / torch.tensor([9.0, 8.5], dtype=torch.float64))
        assert (err <= tol).all(), (tol, r.eigenvalues)
    with pytest.warns(RuntimeWarning, match="before reaching tol"):
        top_hessian_eigenvalues(loss, [x], k=2, tol=1e-12, ncv=6, max_iter=1, start="random")


def test_batched_hvp_equals_looped_hvps():
    from workbench.linalg import HVPOperator
    torch.manual_seed(0)
    model = build_model("mae", **SMALL).eval()
    imgs = torch.randn(4, 3, 16, 16)
    params = select_parameters(model)
    op = HVPOperator(lambda: model(imgs, seed=0).loss, params)
    vs = torch.randn(3, op.numel)
    batched = op.batched(vs)  # vmapped double backward through timm blocks, math attention
    looped = torch.stack([op(v) for v in vs])
    assert op.count == 6
    assert torch.allclose(batched, looped, rtol=1e-4, atol=1e-6 * looped.abs().max())


def test_warm_started_spectrum_matches_cold():
    torch.manual_seed(0)
    model = build_model("mae", **SMALL)
    batches = [torch.randn(8, 3, 16, 16) for _ in range(3)]
    warm = hessian_spectrum(model, batches, k=3, tol=1e-4, progress=False)
    cold = hessian_spectrum(model, batches, k=3, tol=1e-4, warm_start=False, progress=False)
    assert torch.allclose(warm, cold, rtol=1e-3)


def test_a_tolerance_below_float32_resolution_is_warned_about():
    loss, x, _ = quadratic([3.0, 2.0, 1.0] + [0.1] * 97)
    x32 = torch.nn.Parameter(x.detach().float())
    a = torch.diag(torch.tensor([3.0, 2.0, 1.0] + [0.1] * 97))
    with pytest.warns(RuntimeWarning, match="below what torch.float32"):
        top_hessian_eigenvalues(lambda: 0.5 * x32 @ a @ x32, [x32], k=1, tol=1e-8, max_iter=2)
    with warnings.catch_warnings():  # float64 resolves it: no warning
        warnings.simplefilter("error")
        top_hessian_eigenvalues(loss, [x], k=1, tol=1e-8)
