"""The fine-tuning series (MAE Fig. 9's partial fine-tuning, MFF's few-shot shares): its runs on
tiny sizes, its two claims against hand-computed effects, and its figure."""
from __future__ import annotations

import dataclasses

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")

from workbench import plots  # noqa: E402
from workbench.checkpoints import load_checkpoint, load_classifier, save_weights  # noqa: E402
from workbench.core.config import model_config  # noqa: E402
from workbench.data import fixed_batch  # noqa: E402
from workbench.experiments import findings  # noqa: E402
from workbench.experiments.finetune import (ALL_BLOCKS, FinetuneSeries, finetune_series,  # noqa: E402
                                            run_name, series_claims, series_runs)
from workbench.models import model_from_config  # noqa: E402
from workbench.training import topk_evaluation  # noqa: E402

EVAL = 24


def encoder_file(folder, seed: int):
    """A small random MAE encoder (16 px, 3 blocks of width 32) in our layout."""
    torch.manual_seed(seed)
    model = model_from_config(model_config("mae", "tiny", img_size=16, patch_size=4,
                                           embed_dim=32, depth=3, num_heads=2))
    path = folder / f"encoder{seed}.safetensors"
    save_weights(model, path)
    return path


def test_series_runs_once_each_and_names_them():
    assert series_runs((0, 1, "all"), (0.01, 0.1, 1)) == [
        (0, 1.0), (1, 1.0), ("all", 1.0), ("all", 0.01), ("all", 0.1)]  # the full run once
    assert series_runs(["2", "all"], [1.0]) == [(2, 1.0), ("all", 1.0)]
    assert run_name(1, 1.0) == "k1-f1" and run_name("all", 0.01) == "kall-f0.01"


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    base = tmp_path_factory.mktemp("series")
    encoders = {"MAE": encoder_file(base, 0), "MFF-MAE": encoder_file(base, 1)}
    kw = dict(eval_images=EVAL, runs_dir=base / "runs", steps=3, batch_size=8, threads=1,
              mixup=0, cutmix=0, drop_path=0.0)
    first = finetune_series(encoders, (0, 1, ALL_BLOCKS), (0.01, 1.0), **kw)
    return base, encoders, kw, first


def test_series_scores_every_run_on_the_same_held_out_images(series):
    base, encoders, _, s = series
    names = ["k0-f1", "k1-f1", "kall-f1", "kall-f0.01"]
    assert s.models == ["MAE", "MFF-MAE"] and s.tune_blocks == [0, 1, "all"]
    assert s.label_fractions == [0.01, 1.0] and s.depth == {"MAE": 3, "MFF-MAE": 3}
    assert s.n_test == EVAL and s.num_classes == 8 and (s.steps, s.batch_size) == (3, 8)
    for m in s.models:
        assert list(s.correct[m]) == names and all(len(c) == EVAL for c in s.correct[m].values())
        assert s.blocks_curve()[m] == [s.top1(m, k) for k in (0, 1, "all")]
        assert s.fractions_curve()[m] == [s.top1(m, "all", 0.01), s.top1(m)]
    # the share of labels: 1 % of the shapes' 1024 per class, 10 per class; the rest all 8192
    assert s.labelled == {"k0-f1": 8192, "k1-f1": 8192, "kall-f1": 8192, "kall-f0.01": 80}
    # the per-image scores are the run's own held-out top-1 (the loop's eval_top1, same images)
    run = next((base / "runs").glob("mae-kall-f1-*"))
    imgs, labels = fixed_batch("shapes", 16, EVAL, "heldout", 0)
    assert topk_evaluation(load_classifier(run), imgs, labels)["eval_top1"] == \
        pytest.approx(s.top1("MAE"))
    assert FinetuneSeries.from_dict(s.to_dict()) == s


def test_frozen_blocks_stay_and_the_trained_share_grows_with_k(series):
    """k = 0 and 1 leave the first blocks bit-identical to the encoder, full fine-tuning moves
    them; the optimizer holds more parameters as k grows (the monotone part of the series)."""
    base, encoders, _, _ = series
    start = load_checkpoint(encoders["MAE"]).state_dict()["blocks.0.attn.qkv.weight"]
    trained = {}
    for k in ("0", "1", "all"):
        run = next((base / "runs").glob(f"mae-k{k}-f1-*"))
        ck = torch.load(run / "checkpoint.pt", weights_only=True)
        same = torch.equal(ck["model"]["blocks.0.attn.qkv.weight"], start)
        assert same == (k != "all"), k
        last_same = torch.equal(ck["model"]["blocks.2.attn.qkv.weight"],
                                load_checkpoint(encoders["MAE"]).state_dict()[
                                    "blocks.2.attn.qkv.weight"])
        assert last_same == (k == "0"), k
        trained[k] = sum(len(g["params"]) for g in ck["optimizer"]["param_groups"])
    assert trained["0"] < trained["1"] < trained["all"]


def test_a_finished_series_is_reused_and_other_settings_get_their_own_runs(series):
    base, encoders, kw, first = series
    checkpoints = {p: p.stat().st_mtime_ns for p in (base / "runs").glob("*/checkpoint.pt")}
    again = finetune_series(encoders, (0, 1, ALL_BLOCKS), (0.01, 1.0), **kw)
    assert again.correct == first.correct
    assert {p: p.stat().st_mtime_ns for p in (base / "runs").glob("*/checkpoint.pt")} == \
        checkpoints  # nothing trained again
    other = finetune_series({"MAE": encoders["MAE"]}, (0,), (), **{**kw, "steps": 2})
    assert other.models == ["MAE"] and other.label_fractions == []
    assert len(list((base / "runs").glob("mae-k0-f1-*"))) == 2  # a new folder for 2 steps


# ----------------------------------------------------------------------------- the claims
def correctness(accuracy: float, n: int = 400) -> np.ndarray:
    """0/1 per image with exactly ``accuracy`` of them right, the right ones first."""
    return (np.arange(n) < round(accuracy * n)).astype(float)


def test_partial_fine_tuning_effect_is_one_block_minus_the_midpoint():
    head, one, full = correctness(0.20), correctness(0.70), correctness(0.80)
    c = findings.partial_ft_one_block_recovers_gap(head, one, full)
    assert c.effect == pytest.approx(0.70 - (0.20 + 0.80) / 2)  # 0.2: over half the gap
    assert c.verdict == "held" and c.sizes == {"seeds": 1, "images": 400}
    assert "share of the gap recovered 0.83" in c.measured and c.claim.startswith("MAE:")
    assert c.source == "MAE §4.3 (Fig. 9)" and c.sesoi == 0.01 and "midpoint" in c.sesoi_reason
    less = findings.partial_ft_one_block_recovers_gap(head, correctness(0.30), full)
    assert less.effect == pytest.approx(-0.2) and less.verdict == "not held"
    assert "share of the gap recovered 0.17" in less.measured
    flat = findings.partial_ft_one_block_recovers_gap(full, one, head)  # full below head only
    assert flat.verdict == "not testable" and "no gap to recover" in flat.note
    # three seeds: each seed's mean effect is one unit of a t-test
    rng = np.random.default_rng(0)
    seeds = [[(rng.random(200) < p).astype(float) for p in (0.2, 0.6 + 0.01 * s, 0.8)]
             for s in range(3)]
    c3 = findings.partial_ft_one_block_recovers_gap(*zip(*seeds))
    want = np.mean([k1.mean() - (k0.mean() + ka.mean()) / 2 for k0, k1, ka in seeds])
    assert c3.effect == pytest.approx(want) and c3.sizes["seeds"] == 3 and "t-test" in c3.test
    with pytest.raises(ValueError, match="same held-out images"):
        findings.partial_ft_one_block_recovers_gap(head, one[:10], full)


def test_few_shot_effect_is_the_change_in_mff_lead():
    mae_few, mff_few = correctness(0.20), correctness(0.40)
    mae_all, mff_all = correctness(0.50), correctness(0.55)
    c = findings.mff_advantage_grows_as_labels_shrink(mae_few, mff_few, mae_all, mff_all,
                                                      fraction=0.01)
    assert c.effect == pytest.approx((0.40 - 0.20) - (0.55 - 0.50))  # 0.15
    assert c.verdict == "held" and "paired sign-flip" in c.test
    assert "with 1 % of the labels: MAE 20.0 %, MFF 40.0 %" in c.measured
    flipped = findings.mff_advantage_grows_as_labels_shrink(mff_few, mae_few, mff_all, mae_all)
    assert flipped.effect == pytest.approx(-0.15) and flipped.verdict == "not held"
    assert "with few labels" in flipped.measured
    same = findings.mff_advantage_grows_as_labels_shrink(mae_few, mae_few, mae_all, mae_all)
    assert same.effect == 0 and same.verdict == "inconclusive"


def test_a_claim_not_measured_has_no_numbers_and_stays_out_of_the_family():
    c = findings.not_measured(findings.FEW_SHOT_TEXT, "not run: no job file")
    d = c.to_dict()
    assert d["verdict"] == "not testable" and d["effect"] is None and d["ci"] == [None, None]
    assert d["note"] == "not run: no job file" and d["sizes"] == {}
    held = findings.mff_better_linear_probe(correctness(0.3), correctness(0.6))
    adjusted = findings.adjust_family([held, c])
    assert adjusted[1].p_adjusted is None and adjusted[0].p_adjusted == pytest.approx(held.p_two)
    row = plots.forest_figure(adjusted).axes[1]
    assert "not testable (not measured)" in row.get_title(loc="left") and not row.get_xticks().size


def synthetic_series(**changes) -> FinetuneSeries:
    acc = {"MAE": {"k0-f1": 0.2, "k1-f1": 0.7, "kall-f1": 0.8, "kall-f0.01": 0.3},
           "MFF-MAE": {"k0-f1": 0.3, "k1-f1": 0.5, "kall-f1": 0.85, "kall-f0.01": 0.5}}
    s = FinetuneSeries([0, 1, "all"], [0.01, 1.0],
                       {m: {r: correctness(a).tolist() for r, a in runs.items()}
                        for m, runs in acc.items()}, {"MAE": 6, "MFF-MAE": 6},
                       {"k0-f1": 8192, "k1-f1": 8192, "kall-f1": 8192, "kall-f0.01": 80}, 8, 30,
                       48, 0, {})
    return dataclasses.replace(s, **changes)


def test_series_claims_pick_their_runs():
    partial, lead = series_claims(synthetic_series())
    assert partial.effect == pytest.approx(0.7 - 0.5) and partial.claim.startswith("MAE:")
    assert lead.effect == pytest.approx((0.5 - 0.3) - (0.85 - 0.8))
    assert "with 1 % of the labels" in lead.measured
    two = series_claims([synthetic_series(), synthetic_series(seed=1)])
    assert [c.sizes["seeds"] for c in two] == [2, 2]
    missing = series_claims(synthetic_series(tune_blocks=[0, "all"], label_fractions=[1.0]))
    assert [c.verdict for c in missing] == ["not testable"] * 2
    assert "not 0, 1 and all" in missing[0].note and "below 1" in missing[1].note


# ----------------------------------------------------------------------------- the figure
def test_series_figure_draws_both_panels_with_intervals():
    s = synthetic_series()
    fig = plots.finetune_series_figure(s.tune_blocks, s.blocks_curve(), s.label_fractions,
                                       s.fractions_curve(), depth=6, n_test=400, n_classes=8)
    left, right = fig.axes
    assert [t.get_text() for t in left.get_xticklabels()] == ["0", "1", "all (6)"]
    assert right.get_xscale() == "log"
    (mae,) = [c for c in left.containers if c.get_label() == "MAE"]
    low, high = mae.lines[2][0].get_segments()[0][:, 1]  # k = 0's interval, in %
    lo, hi = plots.wilson_interval(0.2, 400)
    assert np.allclose([low, high], [100 * lo, 100 * hi])
    assert any(np.allclose(line.get_ydata(), 12.5) for line in left.get_lines())
