"""The decision rule and the claims, on simulated data with a known truth."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import stats

from workbench import findings
from workbench.findings import Claim, decide, decide_over_seeds
from workbench.probes import FrequencyResponse, FusionHistory

DRAWS = 500


# ----------------------------------------------------------------------------- decide
def verdict_rate(draw, verdict: str, **kw) -> float:
    rng = np.random.default_rng(0)
    return np.mean([decide(*draw(rng), **kw).verdict == verdict for _ in range(DRAWS)])


@pytest.mark.parametrize("paired", [False, True])
def test_no_effect_is_rarely_held(paired):
    """Under no effect, "held" in at most about 5 % of 500 draws (the rule's two-sided 95 %
    interval gives about 2.5 %), for either direction and design."""
    def draw(rng):
        return rng.normal(size=5), rng.normal(size=5)
    for direction in ("greater", "less"):
        rate = verdict_rate(draw, "held", paired=paired, direction=direction)
        assert rate <= 0.06, (direction, rate)


def test_large_effect_is_held():
    """A 3 SD effect with n = 5 is "held" in at least 90 % of draws, and "not held" when the
    paper's direction is the other one."""
    def one(rng):
        return (rng.normal(3.0, 1.0, size=5),)
    assert verdict_rate(one, "held", direction="greater") >= 0.9
    assert verdict_rate(one, "not held", direction="less") >= 0.9

    def pair(rng):
        a = rng.normal(size=5)
        return a, a - 3.0 + 0.5 * rng.normal(size=5)  # b below a by ~3 SD of the differences
    assert verdict_rate(pair, "held", paired=True, direction="less") >= 0.9


def test_bootstrap_no_effect_and_large_effect():
    rng = np.random.default_rng(1)
    nulls = [decide(rng.normal(size=40), test="bootstrap", n_resamples=999, seed=i).verdict
             for i in range(100)]
    assert nulls.count("held") <= 10
    big = decide(rng.normal(1.0, 1.0, size=40), test="bootstrap", seed=0)
    assert big.verdict == "held" and big.ci[0] > 0 and big.p < 0.01


def test_matches_scipy_and_a_textbook_interval():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=8), rng.normal(0.5, 1.0, size=8)
    d = decide(a, b, paired=True)
    diff = b - a
    half = stats.t.ppf(0.975, 7) * diff.std(ddof=1) / np.sqrt(8)  # mean ± t·s/√n
    assert d.effect == pytest.approx(diff.mean())
    assert d.ci == pytest.approx([diff.mean() - half, diff.mean() + half])
    assert d.p == pytest.approx(stats.ttest_rel(b, a, alternative="greater").pvalue)
    assert d.n == 8 and "paired" in d.test
    w = decide(a, b, direction="less")  # two groups: Welch
    assert w.effect == pytest.approx(b.mean() - a.mean())
    assert w.p == pytest.approx(stats.ttest_ind(b, a, equal_var=False, alternative="less").pvalue)
    assert "Welch" in w.test and w.n == 16


def test_verdict_follows_the_interval():
    assert findings.verdict_of([0.1, 0.5], "greater") == "held"
    assert findings.verdict_of([0.1, 0.5], "less") == "not held"
    assert findings.verdict_of([-0.1, 0.5], "greater") == "inconclusive"
    assert findings.verdict_of([float("nan")] * 2, "less") == "inconclusive"


def test_too_little_evidence_is_inconclusive():
    assert decide([3.0]).verdict == "inconclusive"
    assert decide([2.0, 2.0, 2.0]).verdict == "inconclusive"  # no spread: nothing to go on
    d = decide([1.0], [2.0], paired=True)
    assert d.verdict == "inconclusive" and np.isnan(d.ci[0])


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="direction"):
        decide([1, 2], direction="up")
    with pytest.raises(ValueError, match="non-finite"):
        decide([1, float("nan")])
    with pytest.raises(ValueError, match="equal sizes"):
        decide([1, 2, 3], [1, 2], paired=True)
    with pytest.raises(ValueError, match="test must be"):
        decide([1, 2], test="magic")


def test_seeds_are_the_unit_when_there_are_several():
    """Several seeds: a t-test over seed means (many images per seed cannot make a single
    seed's offset look significant). One seed: a bootstrap over its images, with a note."""
    rng = np.random.default_rng(3)
    seeds = [rng.normal(m, 1.0, size=300) for m in (0.4, -0.4, 0.1)]  # seed effects cancel
    d, sizes, note = decide_over_seeds(seeds, direction="greater", unit="images")
    assert sizes == {"seeds": 3, "images": 900} and d.n == 3 and "t-test" in d.test
    assert d.verdict == "inconclusive" and note == ""
    d1, sizes1, note1 = decide_over_seeds(seeds[:1], direction="greater", unit="images")
    assert d1.verdict == "held" and d1.n == 300 and "bootstrap" in d1.test
    assert "one training seed" in note1 and sizes1 == {"seeds": 1, "images": 300}


# ----------------------------------------------------------------------------- claims
def history(weights) -> FusionHistory:
    w = torch.tensor(weights, dtype=torch.float64)
    return FusionHistory(torch.arange(len(w)) * 10, w, [0, 2, 4, 5])


def test_fusion_moves_shallow_over_seeds():
    uniform = [0.25] * 4
    shallow = [history([uniform, [0.4 + e, 0.3, 0.2, 0.1 - e]]) for e in (0.0, 0.02, 0.04)]
    deep = [history([uniform, [0.1 - e, 0.2, 0.3, 0.4 + e]]) for e in (0.0, 0.02, 0.04)]
    assert findings.fusion_moves_shallow(shallow).verdict == "held"
    assert findings.fusion_moves_shallow(deep).verdict == "not held"
    one = findings.fusion_moves_shallow(shallow[0])
    assert one.verdict == "inconclusive" and one.sizes == {"seeds": 1}
    late = FusionHistory(torch.tensor([10, 20]), torch.tensor([uniform, uniform], dtype=torch.float64),
                         [0, 2, 4, 5])
    assert "not the initialisation" in findings.fusion_moves_shallow([late, late]).note


def test_mff_converges_faster_from_knn_histories():
    from workbench.probes import KnnHistory

    steps = [0, 100, 200, 300]
    mae = [KnnHistory(steps, [0.1, 0.2, 0.3, 0.4], 128) for _ in range(3)]
    gaps = [0.05, 0.08, 0.06]  # MFF above MAE by these at every logged step after 0
    mff = [KnnHistory(steps, [0.1] + [a + g for a in (0.2, 0.3, 0.4)], 128) for g in gaps]
    c = findings.mff_converges_faster(mae, mff)
    assert c.effect == pytest.approx(np.mean(gaps)) and c.n == 3 and c.verdict == "held"
    assert "final kNN accuracy MAE [40.0, 40.0, 40.0]" in c.measured
    reverse = findings.mff_converges_faster(mff, mae)
    assert reverse.verdict == "not held"
    # one seed: training randomness is not sampled, so no verdict either way
    one = findings.mff_converges_faster(mae[0], mff[0])
    assert one.verdict == "inconclusive" and one.effect == pytest.approx(0.05)
    # steps logged by only one run are left out; no shared step is an error that names them
    shifted = KnnHistory([0, 100, 250, 300], [0.1, 0.3, 0.9, 0.5], 128)
    assert findings.mff_converges_faster(mae[0], shifted).effect == pytest.approx(0.1)
    with pytest.raises(ValueError, match="share no step"):
        findings.mff_converges_faster(mae[0], KnnHistory([0, 50], [0.1, 0.2], 128))


def test_supervised_last_layer():
    last = [history([[0.25] * 4, [0.1, 0.1, 0.2 - e, 0.6 + e]]) for e in (0.0, 0.05, 0.1)]
    assert findings.supervised_fusion_favors_last(last).verdict == "held"
    first = [history([[0.25] * 4, [0.6 + e, 0.2 - e, 0.1, 0.1]]) for e in (0.0, 0.05, 0.1)]
    assert findings.supervised_fusion_favors_last(first).verdict == "not held"


def response(hf_per_image: np.ndarray) -> FrequencyResponse:
    """A response whose highest-frequency value per image and block is ``hf_per_image`` [B, L]."""
    b, layers = hf_per_image.shape
    curves = np.zeros((b, layers, 3))
    curves[:, :, -1] = hf_per_image
    img = torch.tensor(curves)
    return FrequencyResponse(img.mean(0), torch.tensor([0.0, 0.5, 1.0]),
                             [f"block {i}" for i in range(layers)],
                             torch.arange(1, layers + 1, dtype=torch.float64) / layers, img)


def test_frequency_claims_on_a_known_signal():
    rng = np.random.default_rng(4)
    falling = response(-np.arange(6)[None] * 0.3 + rng.normal(0, 0.2, (64, 6)))
    rising = response(np.arange(6)[None] * 0.3 + rng.normal(0, 0.2, (64, 6)))
    c = findings.shallow_layers_more_high_frequency("MAE", falling)
    assert c.verdict == "held" and c.effect == pytest.approx(-0.3 * 6, rel=0.1)  # blocks 1/6 apart
    assert findings.shallow_layers_more_high_frequency("MAE", rising).verdict == "not held"
    mae = response(rng.normal(0, 0.2, (64, 6)))
    less = response(mae.image_curves[:, :, -1].numpy() - 0.2)
    c = findings.mff_last_layer_less_high_frequency(mae, less)
    assert c.verdict == "held" and c.effect == pytest.approx(-0.2) and "paired" in c.test
    with pytest.raises(ValueError, match="same items"):
        findings.mff_last_layer_less_high_frequency(mae, response(rng.normal(size=(32, 6))))


def test_hessian_log_ratio():
    rng = np.random.default_rng(5)
    mae = np.exp(rng.normal(3, 0.3, size=(32, 5)))
    flatter = mae * np.exp(-0.1 + 0.05 * rng.normal(size=(32, 5)))
    c = findings.mff_flatter_hessian(torch.tensor(mae), torch.tensor(flatter))
    assert c.verdict == "held" and c.effect == pytest.approx(-0.1, abs=0.02)
    assert c.sizes == {"seeds": 1, "minibatches": 32}
    same = mae * np.exp(0.05 * rng.normal(size=(32, 5)))
    assert findings.mff_flatter_hessian(mae, same).verdict in ("inconclusive", "held", "not held")
    assert findings.mff_flatter_hessian([mae, mae], [flatter, flatter * 0.9]).sizes == \
        {"seeds": 2, "minibatches": 64}


def test_linear_probe_paired_on_images():
    rng = np.random.default_rng(6)
    mae = rng.random(500) < 0.6
    better = mae | (rng.random(500) < 0.3)  # right wherever MAE is, and more
    assert findings.mff_better_linear_probe(mae, better).verdict == "held"
    assert findings.mff_better_linear_probe(better, mae).verdict == "not held"


def test_mask_ratio_peak():
    rng = np.random.default_rng(7)
    ratios = [0.1, 0.25, 0.4, 0.6, 0.75, 0.9]
    acc = np.array([0.4, 0.45, 0.5, 0.6, 0.7, 0.6])
    correct = [(rng.random((6, 400)) < acc[:, None]).astype(float) for _ in range(3)]  # 3 seeds
    c = findings.high_mask_ratio_best(ratios, correct)
    assert c.verdict == "held" and "peak 0.75" in c.measured
    lo, hi = findings.peak_interval(np.array(ratios), correct)
    assert 0.6 <= lo <= 0.75 <= hi <= 0.9
    flat = [(rng.random((6, 400)) < acc[::-1, None]).astype(float) for _ in range(2)]
    assert findings.high_mask_ratio_best(ratios, flat).verdict == "not held"
    with pytest.raises(ValueError, match="below 0.6"):
        findings.high_mask_ratio_best([0.75, 0.9], [np.ones((2, 4))])


def test_claims_round_trip_and_report():
    c = findings.mff_better_linear_probe(np.r_[np.ones(30), np.zeros(30)], np.ones(60))
    d = json.loads(json.dumps(c.to_dict()))
    assert {"effect", "ci", "p", "n", "test", "verdict"} <= set(d)
    assert len(d["ci"]) == 2 and Claim.from_dict(d) == c
    text = findings.findings_markdown([c], "quick", "one seed")
    assert "quick profile" in text and "1 held" in text and "images 60" in text


def test_forest_plot_marks_the_paper_side_and_the_verdict():
    import matplotlib

    matplotlib.use("Agg")
    from workbench import plots

    rng = np.random.default_rng(8)
    held = findings.mff_flatter_hessian(np.exp(rng.normal(3, 0.1, (16, 5))),
                                        np.exp(rng.normal(2.5, 0.1, (16, 5))))  # less: paper "<"
    unknown = findings.fusion_moves_shallow(history([[0.25] * 4, [0.3, 0.3, 0.2, 0.2]]))
    fig = plots.forest_figure([held, unknown.to_dict()])  # claims or their dicts
    axes = fig.axes
    assert len(axes) == 2
    for ax, c in zip(axes, (held, unknown)):
        span = ax.patches[0]  # the shaded span: the paper's side of 0
        x0, x1 = sorted((span.get_x(), span.get_x() + span.get_width()))
        assert (x1 <= 1e-12 if c.direction == "less" else x0 >= -1e-12), (x0, x1)
        assert c.verdict in ax.get_title(loc="left")
        assert ax.get_title(loc="left").startswith(c.source)
    assert len(axes[0].lines) == 3  # zero line, interval, effect
    assert len(axes[1].lines) == 2  # one seed: no interval to draw
