"""The representation analyses' figures, the attention explorer, the per-head statistics and the
kNN history: each drawn or read value checked against the probe's numbers."""
from __future__ import annotations

import json

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")

from workbench import build_model, plots  # noqa: E402
from workbench.data import fixed_batch  # noqa: E402
from workbench.probes import (LayerProbes, NoKnnLogError, attention_distance,  # noqa: E402
                              attention_maps, attention_statistics, knn_history)
from workbench.widgets import AttentionExplorer  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return build_model("mae", "tiny", depth=3)


@pytest.fixture(scope="module")
def imgs():
    return fixed_batch("builtin", 32, 4, "heldout", 0)[0]


def test_layer_probe_figure_draws_the_accuracies_chance_and_best(tmp_path):
    rng = np.random.default_rng(0)
    correct = {p: rng.random((3, 50)) < q for p, q in
               (("linear cls", 0.6), ("linear mean", 0.4), ("kNN cls", 0.5), ("kNN mean", 0.3))}
    res = LayerProbes([0, 1, 2], correct, 100, 8)
    fig = plots.layer_probe_figure({"MAE": res})
    ax_linear = fig.axes[0]
    drawn = [line.get_ydata() for line in ax_linear.lines if len(line.get_xdata()) == 3]
    expected = [100 * res.accuracy[p] for p in ("linear cls", "linear mean")]
    assert all(any(np.allclose(d, e) for d in drawn) for e in expected)
    chance = [line for line in ax_linear.lines if line.get_label() == "chance 1/8"]
    assert chance and np.allclose(chance[0].get_ydata(), 12.5)
    best = res.best_layer("linear cls")
    assert any(len(line.get_xdata()) == 1 and line.get_xdata()[0] == best
               and np.isclose(line.get_ydata()[0], 100 * res.accuracy["linear cls"][best])
               for line in ax_linear.lines)
    assert "n = 50" in ax_linear.get_ylabel()


def test_cka_and_attention_figures(model, imgs):
    m = np.array([[1.0, 0.5], [0.5, 1.0]])
    fig = plots.cka_figure({"MAE": m, "MAE × MFF": m[::-1]},
                           {"MAE × MFF": ("MAE block", "MFF block")})
    assert np.allclose(fig.axes[0].images[0].get_array(), m)
    assert fig.axes[1].get_ylabel() == "MAE block" and fig.axes[-1].get_ylabel() == "linear CKA"
    stats = attention_statistics(model, imgs)
    assert stats.distance.shape == stats.entropy.shape == stats.nmi.shape == (3, 3)
    maps = attention_maps(model, imgs)
    assert np.allclose(stats.distance[1], attention_distance(maps[1], 8, 4).numpy())
    fig = plots.attention_figure({"MAE": stats})
    means = [line.get_ydata() for line in fig.axes[1].lines if line.get_linestyle() == "-"]
    assert np.allclose(means[0], stats.entropy.mean(axis=1))


def test_knn_history_reads_the_run_and_is_drawn(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"step": 0, "knn_acc": 0.1}, {"step": 5, "loss": 1.0},
            {"step": 10, "loss": 0.9, "knn_acc": 0.25}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "config.json").write_text(json.dumps({"train": {"knn_images": 256}}))
    h = knn_history(run)
    assert (h.steps, h.accuracy, h.n_queries) == ([0, 10], [0.1, 0.25], 128)
    fig = plots.knn_history_figure({"MAE": h})
    line = [ln for ln in fig.axes[0].lines if len(ln.get_xdata()) == 2][0]
    assert np.allclose(line.get_ydata(), [10, 25]) and "n = 128" in fig.axes[0].get_ylabel()
    (run / "metrics.jsonl").write_text(json.dumps({"step": 5, "loss": 1.0}) + "\n")
    with pytest.raises(NoKnnLogError, match="knn-every"):
        knn_history(run)


def test_attention_explorer_shows_the_chosen_query(model, imgs):
    app = AttentionExplorer({"MAE": model}, imgs)
    assert app.image.value[:8] == b"\x89PNG\r\n\x1a\n"
    maps = attention_maps(model, imgs[:1])
    app.layer.value, app.head.value, app.row.value, app.col.value = 1, 2, 3, 5
    row = maps[1][0, 2, 1 + 3 * 8 + 5, 1:]  # head 2, query patch (3, 5); cls dropped
    assert torch.allclose(app.weights.flatten(), row / row.sum(), atol=1e-6)
    app.head.value = "mean"
    mean = maps[1][0].mean(0)[1 + 3 * 8 + 5, 1:]
    assert torch.allclose(app.weights.flatten(), mean / mean.sum(), atol=1e-6)
    assert "block 1, head mean: query patch (3, 5)" in app.status.value
    app.index.value = 2  # another image: its own maps
    assert len(app._maps) == 2
