"""Hessian trace (Hutchinson), spectral density (SLQ) and filter-normalised loss landscapes,
checked against exact answers: known quadratics, and exact dense Hessians of a small MLP and a
tiny MAE (restricted parameter set) built by torch.autograd.functional.hessian."""
from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import scipy.stats
from scipy.integrate import trapezoid
import torch
import torch.nn as nn

matplotlib.use("Agg")

from workbench import build_model  # noqa: E402
from workbench.plots import curvature as plots_curvature  # noqa: E402
from workbench.linalg import (exact_hessian, hessian_density, hessian_trace,  # noqa: E402
                              lanczos_tridiagonal, smooth_spectrum)
from workbench.probes.curvature import compare_curvature, mae_loss_fn  # noqa: E402
from workbench.probes.landscape import (compare_landscapes, filter_normalize,  # noqa: E402
                                        filter_normalized_direction, loss_landscape)
from problems import quadratic  # noqa: E402

TINY = dict(embed_dim=16, num_heads=2, decoder_embed_dim=16, decoder_num_heads=2, depth=1,
            decoder_depth=1, img_size=16, patch_size=4)
# a non-quadratic slice of the tiny MAE: attention output, a LayerNorm, the mask token, a bias
MAE_SUBSET = ("blocks.0.attn.proj.", "decoder_blocks.0.norm1.", "decoder_pred.bias",
              "mask_token")


@pytest.fixture(scope="module")
def small_nets():
    """{name: (loss_fn, params, exact Hessian)} for a small MLP and the tiny MAE subset."""
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(4, 12), nn.Tanh(), nn.Linear(12, 3)).double()
    x, y = torch.randn(32, 4, dtype=torch.float64), torch.randn(32, 3, dtype=torch.float64)
    mlp_h = exact_hessian(mlp, [n for n, _ in mlp.named_parameters()], lambda f: ((f(x) - y) ** 2).mean())
    mae = build_model("mae", "tiny", **TINY).double().eval()
    imgs = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    named = [(n, p) for n, p in mae.named_parameters() if n.startswith(MAE_SUBSET)]
    mae_h = exact_hessian(mae, [n for n, _ in named], lambda f: f(imgs, seed=0).loss)
    return {"mlp": (lambda: ((mlp(x) - y) ** 2).mean(), list(mlp.parameters()), mlp_h),
            "mae": (mae_loss_fn(mae, imgs, seed=0), [p for _, p in named], mae_h)}


# ------------------------------------------------------------------------------ trace
def test_trace_is_exact_for_a_diagonal_hessian():
    c = torch.linspace(0.5, 3.0, 40, dtype=torch.float64)
    x = nn.Parameter(torch.linspace(-1, 1, 40, dtype=torch.float64))
    res = hessian_trace(lambda: (c * torch.cosh(x)).sum(), [x], num_samples=8)
    exact = float((c * torch.cosh(x.detach())).sum())  # H = diag(c cosh x)
    assert np.allclose(res.samples, exact, rtol=1e-13)  # Rademacher: zᵀDz = tr D every time
    assert res.ci == (pytest.approx(exact, rel=1e-13), pytest.approx(exact, rel=1e-13))
    assert res.num_hvps == 8 == len(res.samples) and res.num_params == 40


def test_trace_confidence_interval_has_its_coverage():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(50, 50, generator=g, dtype=torch.float64)
    a = 0.5 * (a + a.T) + torch.diag(torch.linspace(0, 5, 50, dtype=torch.float64))
    x = nn.Parameter(torch.randn(50, generator=g, dtype=torch.float64))
    exact = float(a.trace())
    probe_var = 2 * float((a ** 2).sum() - (a.diag() ** 2).sum())  # Rademacher variance
    runs = [hessian_trace(lambda: 0.5 * x @ a @ x, [x], num_samples=30, seed=s)
            for s in range(40)]
    covered = sum(r.ci[0] <= exact <= r.ci[1] for r in runs)
    assert covered >= 36  # nominal 95 %: 38 expected of 40
    # not trivially wide: the mean half-width is the t quantile times the true standard error
    ideal = scipy.stats.t.ppf(0.975, 29) * np.sqrt(probe_var / 30)
    assert np.mean([r.half_width for r in runs]) == pytest.approx(ideal, rel=0.15)


@pytest.mark.parametrize("net", ["mlp", "mae"])
def test_trace_of_small_networks_matches_exact(small_nets, net):
    loss_fn, params, h = small_nets[net]
    exact = float(h.trace())
    res = hessian_trace(loss_fn, params, num_samples=100, seed=0)
    assert res.ci[0] <= exact <= res.ci[1]
    assert res.half_width < 0.2 * abs(exact)
    assert res.num_hvps == 100 and res.num_params == h.shape[0]
    stopped = hessian_trace(loss_fn, params, num_samples=100, seed=0, rtol=0.1)
    assert stopped.stopped_early and stopped.num_hvps < 100
    assert stopped.half_width <= 0.1 * abs(stopped.estimate)


# ------------------------------------------------------------------------------ density
def w1(res, exact):
    """Wasserstein-1 between the weighted SLQ nodes and the exact eigenvalues."""
    return scipy.stats.wasserstein_distance(res.nodes.ravel(), exact,
                                            u_weights=res.weights.ravel())


def l1(res, exact, weights=None):
    """∫|SLQ density − the same smoothing of the exact eigenvalues| on the result's grid."""
    ref = smooth_spectrum(res.grid, exact, res.sigma)
    got = res.density if weights is None else smooth_spectrum(res.grid, res.nodes, res.sigma,
                                                               weights)
    return trapezoid(np.abs(got - ref), res.grid)


def test_density_of_a_known_spectrum():
    rng = np.random.default_rng(0)
    lam = np.concatenate([rng.normal(0, 0.3, 280), rng.uniform(2, 4, 15), [8, 12, 20, 30, 50]])
    loss, x, _ = quadratic(lam)
    res = hessian_density(loss, [x], num_probes=4, lanczos_steps=60)
    assert trapezoid(res.density, res.grid) == pytest.approx(1.0, abs=1e-6)
    assert np.allclose(res.weights.sum(1), 1.0)
    assert res.ritz_max == pytest.approx(50.0, rel=1e-9)
    assert res.ritz_min == pytest.approx(lam.min(), rel=1e-6)
    assert res.num_hvps == 240 and res.nodes.shape == (4, 60)
    assert l1(res, lam) < 0.15 and w1(res, lam) < 0.3  # measured 0.053, 0.12
    # a wrong quadrature (uniform weights 1/m: the Ritz-value histogram) fails both: 0.59, 2.3
    uniform = np.full(res.weights.shape, 1.0 / res.weights.size)
    assert l1(res, lam, uniform) > 0.4
    assert scipy.stats.wasserstein_distance(res.nodes.ravel(), lam) > 1.0


def test_full_lanczos_recovers_every_eigenvalue_and_needs_reorthogonalisation():
    lam = np.concatenate([np.linspace(-1, 1, 40), [5.0, 9.0, 20.0]])
    loss, x, _ = quadratic(lam)
    full = hessian_density(loss, [x], num_probes=1, lanczos_steps=100)  # capped at n = 43
    assert full.nodes.shape == (1, 43) and full.num_hvps == 43
    assert np.allclose(np.sort(full.nodes[0]), np.sort(lam), atol=1e-9)
    plain = hessian_density(loss, [x], num_probes=1, lanczos_steps=43, reorthogonalize=False)
    assert np.abs(np.sort(plain.nodes[0]) - np.sort(lam)).max() > 1.0  # ghosts, missed values
    # ghosts: the converged top eigenvalue appears more than once without reorthogonalisation
    loss, x, _ = quadratic(np.concatenate([np.linspace(0, 1, 200), [30.0, 50.0]]))
    copies = {}
    for reorth in (True, False):
        res = hessian_density(loss, [x], num_probes=1, lanczos_steps=60, reorthogonalize=reorth)
        copies[reorth] = int(np.sum(np.abs(res.nodes[0] - 50.0) < 1e-6))
    assert copies[True] == 1 and copies[False] >= 2


@pytest.mark.parametrize("net", ["mlp", "mae"])
def test_density_of_small_networks_matches_exact_spectrum(small_nets, net):
    loss_fn, params, h = small_nets[net]
    lam = torch.linalg.eigvalsh(h).numpy()
    span = lam.max() - lam.min()
    res = hessian_density(loss_fn, params, num_probes=8, lanczos_steps=30, sigma=0.05 * span)
    assert res.ritz_max == pytest.approx(lam.max(), rel=1e-3)
    assert res.ritz_min == pytest.approx(lam.min(), rel=1e-3)
    assert trapezoid(res.density, res.grid) == pytest.approx(1.0, abs=1e-6)
    # measured: mlp 0.082 / 0.013·span, mae 0.017 / 0.003·span
    assert l1(res, lam) < 0.15 and w1(res, lam) < 0.03 * span
    # uniform weights: mlp 0.55 / 0.13·span, mae 1.04 / 0.14·span
    uniform = np.full(res.weights.shape, 1.0 / res.weights.size)
    assert l1(res, lam, uniform) > 0.4
    assert scipy.stats.wasserstein_distance(res.nodes.ravel(), lam) > 0.08 * span


def test_lanczos_tridiagonal_is_the_projected_matrix():
    loss, x, a = quadratic(np.linspace(1, 2, 30))
    v = torch.ones(30, dtype=torch.float64)
    alpha, beta = lanczos_tridiagonal(lambda u: a @ u, v, 5)
    assert alpha.shape == (5,) and beta.shape == (4,)
    assert alpha[0] == pytest.approx(float(v @ a @ v) / 30)


def test_one_lanczos_serves_the_quadrature_and_the_top_k():
    """The quadrature's run and the top-k engine are the same iteration (linalg.lanczos)."""
    from workbench.linalg import lanczos_run, top_eigenpairs
    lam = np.concatenate([np.linspace(-1, 1, 100), [-7.0, 4.0]])
    loss, x, a = quadratic(lam)
    kry = lanczos_run(lambda u: a @ u, torch.ones(102, dtype=torch.float64), 40)
    theta, S, _ = kry.ritz()  # largest magnitude first
    assert kry.m == 40 and kry.p == 0  # the last step adds no frontier vector
    top = top_eigenpairs(loss, [x], k=2, tol=1e-10).eigenvalues
    assert np.allclose(theta[:2], [-7.0, 4.0], rtol=1e-9) and np.allclose(top, theta[:2])
    y = kry.vectors(S[:, :1])[0]  # the Ritz vector of -7: an eigenvector
    assert torch.allclose(a @ y, -7.0 * y, atol=1e-8)
    plain = lanczos_run(lambda u: a @ u, torch.ones(102, dtype=torch.float64), 10,
                        reorthogonalize=False)
    assert plain.Q.shape == (2, 102)  # O(n) memory: a ring of two vectors
    with pytest.raises(ValueError, match="whole basis"):
        plain.vectors(np.eye(10)[:, :1])


def test_bad_inputs():
    loss, x, _ = quadratic([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="num_samples"):
        hessian_trace(loss, [x], num_samples=0)
    with pytest.raises(ValueError, match="ci"):
        hessian_trace(loss, [x], ci=1.5)
    with pytest.raises(ValueError, match="no parameters"):
        hessian_trace(loss, [])
    with pytest.raises(ValueError, match="num_probes"):
        hessian_density(loss, [x], num_probes=0)
    with pytest.raises(ValueError, match="lanczos_steps"):
        hessian_density(loss, [x], lanczos_steps=2.5)
    with pytest.raises(ValueError, match="sigma"):
        hessian_density(loss, [x], sigma=-1.0)
    net = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="directions"):
        loss_landscape(net, lambda: net.weight.sum(), directions=3)
    with pytest.raises(ValueError, match="ignore"):
        loss_landscape(net, lambda: net.weight.sum(), ignore="bn")
    with pytest.raises(ValueError, match="span"):
        loss_landscape(net, lambda: net.weight.sum(), span=0.0)
    with pytest.raises(ValueError, match="no models"):
        compare_landscapes({}, torch.zeros(1, 3, 16, 16))


def test_compare_curvature_uses_the_same_batches_masks_and_probes():
    torch.manual_seed(0)
    mae = build_model("mae", "tiny", **TINY)
    twin = build_model("mae", "tiny", **TINY)
    twin.load_state_dict(mae.state_dict())
    imgs = torch.randn(2, 3, 16, 16)
    res = compare_curvature({"a": mae, "b": twin}, [imgs], params="decoder", seed=3,
                            trace={"num_samples": 4}, density={"num_probes": 1,
                                                                "lanczos_steps": 6})
    assert np.array_equal(res["a"]["trace"].samples, res["b"]["trace"].samples)
    assert np.array_equal(res["a"]["density"].nodes, res["b"]["density"].nodes)
    assert res["a"]["trace"].num_hvps == 4 and res["a"]["density"].num_hvps == 6
    assert mae.training and twin.training
    assert res["a"]["trace"].to_dict()["ci"] == list(res["a"]["trace"].ci)


# ------------------------------------------------------------------------------ landscape
class QuadraticNet(nn.Module):
    """loss = 0.5 (w - w0)ᵀ A (w - w0) + bias·1: known gradient and curvature."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.weight = nn.Parameter(torch.randn(3, 4, generator=g, dtype=torch.float64))
        self.bias = nn.Parameter(torch.randn(3, generator=g, dtype=torch.float64))
        m = torch.randn(12, 12, generator=g, dtype=torch.float64)
        self.a, self.w0 = m @ m.T, torch.randn(12, generator=g, dtype=torch.float64)

    def loss(self):
        r = self.weight.reshape(-1) - self.w0
        return 0.5 * r @ self.a @ r + self.bias.sum()


def test_landscape_of_a_quadratic_is_its_parabola():
    net = QuadraticNet()
    r = (net.weight.detach().reshape(-1) - net.w0)
    base, g = float(net.loss().detach()), net.a @ r
    d1, d2 = (filter_normalized_direction(net, seed=5, index=k)["weight"].reshape(-1)
              for k in (0, 1))
    one = loss_landscape(net, net.loss, directions=1, span=2.0, steps=9, seed=5)
    want = [base + a * float(g @ d1) + 0.5 * a * a * float(d1 @ net.a @ d1) for a in one.alphas]
    assert np.allclose(one.losses, want, rtol=1e-12, atol=1e-12)
    two = loss_landscape(net, net.loss, directions=2, span=(-1.0, 2.0), steps=7, seed=5)
    for i, a in enumerate(two.alphas):
        for j, b in enumerate(two.betas):
            step = a * d1 + b * d2
            assert two.losses[i, j] == pytest.approx(
                base + float(g @ step) + 0.5 * float(step @ net.a @ step), rel=1e-12)


def test_filter_normalisation():
    net = nn.Sequential(nn.Conv2d(3, 5, 3), nn.LayerNorm(5), nn.Linear(5, 7))
    for ignore in ("biasbn", None):
        dirs = filter_normalized_direction(net, seed=1, ignore=ignore)
        for name, p in net.named_parameters():
            d = dirs[name]
            if p.dim() > 1:  # each filter (output row) has its weight filter's norm
                assert torch.allclose(d.reshape(len(d), -1).norm(dim=1),
                                      p.detach().reshape(len(p), -1).norm(dim=1), rtol=1e-5)
                assert not torch.allclose(d, p.detach())
            else:
                assert torch.equal(d, torch.zeros_like(p) if ignore else p.detach())
    with pytest.raises(ValueError, match="shape"):
        filter_normalize(torch.zeros(2, 3), torch.zeros(3, 2))


def test_landscape_restores_weights_and_centre_is_the_loss():
    torch.manual_seed(0)
    model = build_model("mae", "tiny", **TINY).eval()
    imgs = torch.randn(2, 3, 16, 16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss_fn = mae_loss_fn(model, imgs, seed=0)
    res = loss_landscape(model, loss_fn, directions=2, span=0.5, steps=3, seed=0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with torch.no_grad():
        assert res.losses[1, 1] == res.base_loss == float(loss_fn())
    calls = []

    def failing():
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom")
        return loss_fn()
    with pytest.raises(RuntimeError, match="boom"):
        loss_landscape(model, failing, directions=1, steps=5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_compare_landscapes_shares_draws_and_masks():
    torch.manual_seed(0)
    small = dict(TINY, depth=2)
    models = {"MAE": build_model("mae", "tiny", **small),
              "MFF-MAE": build_model("mff", "tiny", **small)}
    imgs = torch.randn(2, 3, 16, 16)
    res = compare_landscapes(models, [imgs], directions=1, span=0.5, steps=3, seed=4)
    for name, model in models.items():
        assert model.training  # mode restored
        with torch.no_grad():
            model.eval()
            assert res[name].base_loss == pytest.approx(float(mae_loss_fn(model, imgs, 4)()))
            model.train()
    da, db = (filter_normalized_direction(m, seed=4) for m in models.values())
    name = "blocks.0.attn.qkv.weight"  # same raw draw, each normalised to its own weights
    unit = [d[name] / d[name].norm(dim=1, keepdim=True) for d in (da, db)]
    assert torch.allclose(unit[0], unit[1], atol=1e-6) and not torch.equal(da[name], db[name])
    assert set(db) - set(da)  # MFF's own parameters (fusion) get directions too
    # draws follow names, not positions: an extra parameter in front changes nothing
    one = nn.ModuleDict({"b": nn.Linear(3, 4)})
    two = nn.ModuleDict({"a": nn.Linear(5, 6), "b": nn.Linear(3, 4)})
    two["b"].load_state_dict(one["b"].state_dict())
    d1, d2 = filter_normalized_direction(one, 7), filter_normalized_direction(two, 7)
    assert torch.equal(d1["b.weight"], d2["b.weight"])
    # ... and are independent across parameters and across the two directions of one seed
    twins = nn.ModuleDict({"a": nn.Linear(3, 4), "b": nn.Linear(3, 4)})
    twins["b"].load_state_dict(twins["a"].state_dict())
    first, second = (filter_normalized_direction(twins, 7, index=k) for k in (0, 1))
    assert not torch.allclose(first["a.weight"], first["b.weight"])
    assert not torch.allclose(first["a.weight"], second["a.weight"])


# ------------------------------------------------------------------------------ plots
def test_plots_draw_the_probe_numbers():
    loss, x, _ = quadratic(np.linspace(-1, 3, 40))
    dens = {"A": hessian_density(loss, [x], num_probes=2, lanczos_steps=10),
            "B": hessian_density(loss, [x], num_probes=2, lanczos_steps=10, seed=1)}
    fig = plots_curvature.density_figure(dens)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    assert np.array_equal(ax.lines[0].get_ydata(), dens["A"].density)
    assert np.array_equal(ax.lines[2].get_xdata(), dens["B"].grid)  # each: curve, λmax line
    traces = {"A": hessian_trace(loss, [x], num_samples=5),
              "B": [hessian_trace(loss, [x], num_samples=5, seed=s) for s in range(3)]}
    fig = plots_curvature.trace_figure(traces)
    bars = fig.axes[0].containers
    assert np.allclose(bars[1].lines[0].get_ydata(), [t.estimate for t in traces["B"]])
    segs = bars[1].lines[2][0].get_segments()  # the vertical error bars: CI low .. high
    assert np.allclose([(s[0][1], s[1][1]) for s in segs], [t.ci for t in traces["B"]])
    fig = plots_curvature.trace_figure({"A": traces["A"], "B": traces["B"][0]})
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["A", "B"]
    net = QuadraticNet()
    one = {"A": loss_landscape(net, net.loss, steps=5)}
    fig = plots_curvature.landscape_figure(one)
    assert np.array_equal(fig.axes[0].lines[0].get_ydata(), one["A"].losses)
    two = {k: loss_landscape(net, net.loss, directions=2, steps=5, seed=s)
           for s, k in enumerate("AB")}
    fig = plots_curvature.landscape_figure(two, levels=7)
    panels = [a for a in fig.axes if a.get_title() in two]
    assert len(panels) == 2 and len(panels[0].collections[0].levels) == 7
    lo = min(ls.losses.min() for ls in two.values())
    assert panels[0].collections[0].levels[0] == pytest.approx(lo)
    with pytest.raises(ValueError, match="mix"):
        plots_curvature.landscape_figure({"A": one["A"], "B": two["B"]})
    import matplotlib.pyplot as plt
    plt.close("all")
