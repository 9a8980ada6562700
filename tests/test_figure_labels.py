"""Figures that say what they show (issue 33.8): intervals on the sweep's accuracies, a CKA
colour scale that resolves the values drawn, whole minibatches on the Hessian axis, and the
attention figure's description over the whole figure rather than clipped in one panel."""
from __future__ import annotations

from types import SimpleNamespace

import matplotlib
import numpy as np

matplotlib.use("Agg")

from workbench import plots  # noqa: E402


def test_sweep_accuracies_carry_their_intervals_and_the_initialisation():
    fig = plots.mask_ratio_sweep_figure([0.25, 0.75], {"loss": [0.5, 0.4]},
                                        {"linear probe": [0.16, 0.18]}, n_test=2048,
                                        init_accuracy=0.15)
    ax = fig.axes[1]
    (bars,) = [c for c in ax.containers if c.has_yerr]
    low, high = bars.lines[2][0].get_segments()[0][:, 1]  # the first point's interval, in %
    lo, hi = plots.wilson_interval(0.16, 2048)
    assert np.allclose([low, high], [100 * lo, 100 * hi])
    assert any(np.allclose(line.get_ydata(), 15.0) for line in ax.get_lines())
    assert any("n = 2048" in t.get_text() for t in ax.get_legend().get_texts())


def test_cka_colour_scale_starts_near_the_lowest_value():
    m = np.array([[1.0, 0.8], [0.8, 1.0]])
    fig = plots.cka_figure({"MAE": m, "MFF-MAE": m * 0.97 + 0.03})
    image = fig.axes[0].get_images()[0]
    assert image.norm.vmin == 0.8 and image.norm.vmax == 1.0
    low = plots.cka_figure({"x": np.array([[1.0, 0.02], [0.02, 1.0]])}).axes[0].get_images()[0]
    assert low.norm.vmin == 0.0


def test_hessian_minibatch_axis_has_whole_ticks():
    rng = np.random.default_rng(0)
    spectra = {"MAE": rng.uniform(1, 2, (3, 2)), "MFF-MAE": rng.uniform(1, 2, (3, 2))}
    fig = plots.hessian_figure(spectra)
    fig.canvas.draw()
    ticks = fig.axes[-1].get_xticks()
    visible = ticks[(ticks >= -0.5) & (ticks <= 2.5)]
    assert len(visible) and np.allclose(visible, np.round(visible))


def test_attention_description_spans_the_figure():
    stats = SimpleNamespace(distance=np.ones((2, 3)), entropy=np.ones((2, 3)),
                            nmi=np.ones((2, 3)), n_images=16, grid_size=8, patch_size=4)
    fig = plots.attention_figure({"MAE": stats}, title="attention")
    assert fig.axes[0].get_title() == ""
    assert "points: heads; n = 16 images" in fig._suptitle.get_text()
    fig.canvas.draw()
    box = fig._suptitle.get_window_extent()
    assert box.x0 >= 0 and box.x1 <= fig.bbox.width  # inside the figure: not clipped


def test_captions_say_what_a_classifier_reached_and_each_model_s_scale(tmp_path):
    import json
    from pathlib import Path

    from workbench.experiments.captions import caption_counts
    from workbench.experiments.tiny_runs import model_scale

    (tmp_path / "fusion_weights_supervised.json").write_text(json.dumps(
        {"heldout_accuracy": 0.3418, "num_classes": 8, "train_steps": 600}))
    text = caption_counts({"N_IMAGES": 4}, [], tmp_path)
    assert "fusion weights supervised: held-out accuracy 34.2 % over 8 classes (chance 12.5 %)" \
        in text and "600 steps" in text and "4 images" in text
    root = Path(__file__).resolve().parents[1]
    assert model_scale(root / "weights" / "mae-tiny" / "model.safetensors") == \
        "32 px images in 4 px patches, encoder 6 blocks × 192, 600 steps of 64 on shapes"
