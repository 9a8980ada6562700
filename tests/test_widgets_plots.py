"""Widget callbacks and plot/save helpers, exercised without a browser."""
from __future__ import annotations

import json

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")

from workbench import build_model, plots  # noqa: E402

from workbench.experiments import findings
from workbench.core.pictures import COLUMNS, compose_rows, image_hwc, png_bytes  # noqa: E402
from workbench.probes import FrequencyResponse, FusionHistory, reconstruct  # noqa: E402
from workbench.widgets import ReconstructionExplorer  # noqa: E402

SMALL = dict(img_size=16, patch_size=4, embed_dim=32, depth=3, num_heads=2,
             decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {"MAE": build_model("mae", **SMALL).eval(), "MFF-MAE": build_model("mff", **SMALL).eval()}


@pytest.fixture(scope="module")
def imgs():
    return torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def test_slider_changes_mask_count_and_image(models, imgs):
    app = ReconstructionExplorer(models, imgs, mask_ratio=0.75)
    assert app.masked_count == 16 - int(16 * 0.25)
    before = app.image.value
    assert before[:8] == b"\x89PNG\r\n\x1a\n"
    app.ratio.value = 0.25
    assert app.masked_count == 16 - int(16 * 0.75)
    assert app.image.value != before
    assert "4/16 patches masked" in app.status.value
    assert "visible-patch statistics" in app.status.value  # says what it shows
    shown = app.image.value
    app.index.value = 2  # another image, same ratio
    assert app.image.value != shown and app.masked_count == 4
    app.strategy.value = "grid"
    assert app.results["MAE"].mask.sum() == 4
    app.seed.value = 5
    assert set(app.results) == {"MAE", "MFF-MAE"}


def test_composed_picture_holds_every_panel(models, imgs):
    res = {n: reconstruct(m, imgs, 0.5, seed=0) for n, m in models.items()}
    pic = compose_rows(res, index=1, scale=2, pad=1)
    # 2 rows of 16*2 px + 1 gap of 2 px; 4 panels of 32 px + 3 gaps of 2 px
    assert pic.shape == (2 * 32 + 2, 4 * 32 + 3 * 2, 3) and pic.dtype == np.uint8
    first = (res["MAE"].original[1].permute(1, 2, 0).numpy() * 255).round()
    assert np.abs(pic[:32:2, :32:2].astype(float) - first).max() <= 1


def _old_compose_rows(results, index=0, scale=4, pad=2):
    """widgets.compose_rows as it was before workbench.core.pictures (the explorer's pixels)."""
    rows = []
    for res in results.values():
        panels = [image_hwc(getattr(res, field)[index]) for field, _ in COLUMNS]
        panels = [np.kron(p, np.ones((scale, scale, 1))) for p in panels]
        h = panels[0].shape[0]
        gap = np.ones((h, pad * scale, 3))
        row = np.concatenate([x for p in panels for x in (p, gap)][:-1], axis=1)
        rows.append(row)
        rows.append(np.ones((pad * scale, row.shape[1], 3)))
    return (np.concatenate(rows[:-1], axis=0) * 255).round().astype(np.uint8)


def _old_picture(r, scale=4):
    """train.reconstruction_grid's pixels before workbench.core.pictures: original | masked (black) |
    pasted, one row per image, no gaps, nearest upscaling."""
    rows = [torch.cat([a, m, c], dim=2) for a, m, c in zip(r.original, r.masked, r.pasted)]
    arr = (torch.cat(rows, dim=1).float().permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    return arr.repeat(scale, axis=0).repeat(scale, axis=1)


def test_pictures_keep_the_old_pixels(models, imgs):
    res = {n: reconstruct(m, imgs, 0.5, seed=3) for n, m in models.items()}
    for index, scale, pad in ((0, 4, 2), (2, 2, 1), (1, 3, 0), (0, 1, 2)):
        assert np.array_equal(compose_rows(res, index, scale, pad),
                              _old_compose_rows(res, index, scale, pad))
    # the training picture: several images of one model, chosen columns, no gaps
    r = reconstruct(models["MFF-MAE"], imgs, 0.75, seed=0, fill=0.0)
    snap = compose_rows(r, range(3), scale=4, pad=0, columns=("original", "masked", "pasted"))
    old = _old_picture(r)
    assert snap.shape == old.shape == (3 * 64, 3 * 64, 3)
    assert np.abs(snap.astype(int) - old.astype(int)).max() <= 1  # rounding of exact halves
    # rows: image by image, model by model
    two = compose_rows(res, [2, 0], scale=1, pad=0)
    assert np.array_equal(two[16:32], compose_rows(res["MFF-MAE"], 2, scale=1, pad=0))
    assert np.array_equal(two[32:48], compose_rows(res["MAE"], 0, scale=1, pad=0))
    assert png_bytes(two)[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="nothing to draw"):
        compose_rows(res, [], scale=1)


def _decode_png(data: bytes) -> np.ndarray:
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im.load()  # reads every IDAT chunk (zlib checks its Adler-32)
        return np.asarray(im)


def test_png_bytes_decode_to_the_same_pixels():
    rng = np.random.default_rng(0)
    shapes = ((1, 1), (7, 13), (40, 3))
    pictures = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in shapes]
    pictures.append(pictures[1].repeat(5, axis=0).repeat(5, axis=1))  # upscaled: repeated rows
    pictures.append(np.asfortranarray(pictures[2]))  # any memory layout
    pictures.append(rng.integers(0, 256, (9, 11, 4), dtype=np.uint8))  # RGBA
    pictures.append(rng.integers(0, 256, (6, 5), dtype=np.uint8))  # grey
    for pic in pictures:
        data = png_bytes(pic)
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert np.array_equal(_decode_png(data), pic), pic.shape


def test_upscale_is_nearest_repetition():
    from workbench.core.pictures import upscale

    rng = np.random.default_rng(1)
    pic = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    for p in (pic, pic[:, ::2], pic[..., :1], np.dstack([pic, pic[..., :1]])):
        for scale in (1, 2, 5):
            ref = np.kron(p.astype(int), np.ones((scale, scale, 1), int))
            out = upscale(p, scale)
            assert out.dtype == np.uint8 and np.array_equal(out, ref), (p.shape, scale)


def test_explorer_shows_the_reference_pixels_and_keeps_model_modes(models, imgs):
    """Every update shows exactly the reference composition of the slider's reconstructions (the
    pre-pictures np.kron renderer, decoded from the PNG), and leaves every submodule's training
    flag as it was: a model in training mode and one with a frozen (eval) block."""
    mae, mff = models["MAE"], models["MFF-MAE"]
    mae.train()
    mff.blocks[0].eval()
    before = {n: [m.training for m in model.modules()] for n, model in models.items()}
    try:
        app = ReconstructionExplorer(models, imgs, mask_ratio=0.75)
        for change in (("ratio", 0.25), ("ratio", 0.9), ("strategy", "grid"), ("index", 1),
                       ("seed", 3), ("ratio", 0.45)):
            setattr(getattr(app, change[0]), "value", change[1])
            i, ratio = app.index.value, app.ratio.value
            for n, model in models.items():
                assert [m.training for m in model.modules()] == before[n], change
                fresh = reconstruct(model, imgs[i:i + 1], ratio, app.strategy.value, app.seed.value)
                assert torch.equal(app.results[n].pasted, fresh.pasted), change
            assert np.array_equal(_decode_png(app.image.value),
                                  _old_compose_rows(app.results, 0, app.scale, 2)), change
    finally:
        mae.eval()
        mff.eval()


def test_models_reconstruct_side_by_side_only_when_distinct(models, imgs, monkeypatch):
    """One thread per model where there are cores; the same model twice is not run at once (each
    call switches its modes), and either way each model's result is its own reconstruction."""
    import workbench.widgets as widgets

    monkeypatch.setattr(widgets.os, "cpu_count", lambda: 2)
    side_by_side = ReconstructionExplorer(models, imgs, mask_ratio=0.5, seed=1)
    assert side_by_side._pool is not None
    twice = ReconstructionExplorer({"a": models["MAE"], "b": models["MAE"]}, imgs,
                                   mask_ratio=0.5, seed=1)
    assert twice._pool is None
    assert torch.equal(twice.results["a"].pasted, twice.results["b"].pasted)
    assert torch.equal(side_by_side.results["MAE"].pasted, twice.results["a"].pasted)
    monkeypatch.setattr(widgets.os, "cpu_count", lambda: 1)
    assert ReconstructionExplorer(models, imgs)._pool is None


def test_latency_leaves_the_slider_where_it_was(models, imgs):
    app = ReconstructionExplorer(models, imgs, mask_ratio=0.75)
    shown = app.image.value
    lat = app.latency(ratios=(0.25, 0.75, 0.95), repeats=2)
    assert set(lat) == {"median_ms", "max_ms", "updates"} and lat["updates"] == 6
    assert 0 < lat["median_ms"] <= lat["max_ms"]
    assert app.ratio.value == 0.75 and app.masked_count == 12 and app.image.value == shown
    with pytest.raises(ValueError):
        app.latency(ratios=())


def test_save_figure_writes_png_svg_html_and_json(tmp_path, models, imgs):
    res = {n: reconstruct(m, imgs, 0.75, seed=0) for n, m in models.items()}
    fig = plots.reconstruction_figure(res)
    paths = plots.save_figure(fig, tmp_path, "recon", data={"loss": {n: r.loss for n, r in res.items()}})
    assert sorted(p.suffix for p in paths) == [".json", ".png", ".svg"]
    assert all(p.stat().st_size > 0 for p in paths)
    assert json.loads((tmp_path / "recon.json").read_text())["loss"]["MAE"] == pytest.approx(res["MAE"].loss)
    hist = FusionHistory(steps=torch.arange(0, 50, 10), weights=torch.softmax(torch.randn(5, 3), 1),
                         layers=[0, 1, 2])
    paths = plots.save_figure(plots.fusion_weights_plotly(hist), tmp_path, "fusion")
    text = paths[0].read_text()
    assert paths[0].suffix == ".html" and "block 2" in text and "plotly" in text.lower()
    with pytest.raises(TypeError, match="matplotlib or plotly"):
        plots.save_figure(object(), tmp_path, "x")


def _response(hf_by_depth, fused=None):
    hf = list(hf_by_depth) + ([fused] if fused is not None else [])
    freqs = torch.tensor([0.0, 0.5, 0.75])
    curves = torch.tensor([[0.0, v / 2, v] for v in hf])
    names = [f"block {i}" for i in range(len(hf_by_depth))] + (["fused"] if fused is not None else [])
    depth = torch.tensor([(i + 1) / len(hf_by_depth) for i in range(len(hf_by_depth))]
                         + ([float("nan")] if fused is not None else []))
    return FrequencyResponse(curves=curves, freqs=freqs, names=names, depth=depth)


def test_findings_follow_the_numbers():
    """One seed without per-image numbers cannot decide a claim; over three seeds the verdict
    follows the numbers (the rule itself: tests/test_findings.py)."""
    def seeds(values, fused=None):
        return [_response([v * (1 + 0.1 * i) for v in values], fused) for i in range(3)]
    falling, rising = seeds([0.5, 0.2, -0.1, -0.4], fused=0.3), seeds([-0.4, -0.1, 0.2, 0.5])
    assert findings.shallow_layers_more_high_frequency("MAE", falling).verdict == "held"
    assert findings.shallow_layers_more_high_frequency("MAE", rising).verdict == "not held"
    assert findings.shallow_layers_more_high_frequency("MAE", falling[0]).verdict == "inconclusive"
    assert findings.mff_last_layer_less_high_frequency(rising, falling).verdict == "held"
    assert findings.mff_last_layer_less_high_frequency(falling, rising).verdict == "not held"

    def history(end, i):
        w = torch.tensor([[1 / 3] * 3, end]) + torch.tensor([[0.0] * 3, [0.01 * i, 0, -0.01 * i]])
        return FusionHistory(steps=torch.tensor([0, 100]), weights=w, layers=[0, 2, 5])
    claim = findings.fusion_moves_shallow([history([0.5, 0.3, 0.2], i) for i in range(3)])
    assert claim.verdict == "held" and "[-0.147, -0.157, -0.167]" in claim.measured
    assert findings.fusion_moves_shallow([history([0.2, 0.3, 0.5], i) for i in range(3)]).verdict \
        == "not held"
    mae = [torch.tensor([[3.0 + i], [5.0]]) for i in range(3)]
    assert findings.mff_flatter_hessian(mae, [m / 2 - 0.1 * i for i, m in enumerate(mae)]).held


def _colorbars(fig):
    return [a for a in fig.axes if a.get_label() == "<colorbar>"]


def test_frequency_and_hessian_figures_draw(tmp_path):
    fig = plots.frequency_figure({"MAE": _response([0.5, 0.1, -0.2]),
                                  "MFF-MAE": _response([0.4, 0.0, -0.3], fused=0.1)})
    assert len(fig.axes) == 5 and len(fig.axes[1].lines) == 4  # 3 blocks + fused; 2 colourbars
    bars = _colorbars(fig)
    assert len(bars) == 2 and all(b.get_ylabel() == "depth (block index)" for b in bars)
    assert [t.get_text() for t in bars[0].get_yticklabels()] == ["0", "1", "2"]
    # the colourbar's cells are the lines' colours, shallow first
    hexes = matplotlib.colors.to_hex
    fig.canvas.draw()  # the colourbar's cells (a QuadMesh), one per block, get their colours
    solids, = [c for c in bars[0].collections if isinstance(c, matplotlib.collections.QuadMesh)]
    cells = [hexes(c) for c in solids.get_facecolor()]
    assert cells == [hexes(line.get_color()) for line in fig.axes[0].lines]
    assert fig.axes[0].get_legend() is None  # no legend per curve
    fig = plots.hessian_figure({"MAE": torch.tensor([[5.0, 1.0], [4.0, -0.5]]),
                                "MFF-MAE": torch.tensor([[2.0, 0.5], [1.5, -0.1]])})
    assert fig.axes[0].get_yscale() == "log"
    assert len(plots.save_figure(fig, tmp_path, "hessian")) == 2


def _sublayer_response(hf_attn, hf_mlp):
    names, hf = [], []
    for i, (a, m) in enumerate(zip(hf_attn, hf_mlp)):
        names += [f"block {i} attn", f"block {i} mlp"]
        hf += [a, m]
    return FrequencyResponse(curves=torch.tensor([[0.0, v / 2, v] for v in hf]),
                             freqs=torch.tensor([0.0, 0.5, 0.75]), names=names,
                             depth=torch.tensor([(j + 1) / len(hf) for j in range(len(hf))]))


def test_frequency_figure_marks_sublayers_and_depth():
    fig = plots.frequency_figure({"MAE": _sublayer_response([0.5, 0.2, 0.0], [0.3, 0.1, -0.1])})
    ax = fig.axes[0]
    styles = [line.get_linestyle() for line in ax.lines]
    assert styles == ["-", "--"] * 3  # attention solid, MLP dashed, block by block
    colors = [matplotlib.colors.to_hex(line.get_color()) for line in ax.lines]
    assert colors[0::2] == colors[1::2] and len(set(colors)) == 3  # colour = block, not sub-block
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["after attention", "after MLP"]
    assert [h.get_linestyle() for h in legend.legend_handles] == ["-", "--"]
    bars = _colorbars(fig)
    assert len(bars) == 1 and bars[0].get_ylabel() == "depth (block index)"
    assert [t.get_text() for t in bars[0].get_yticklabels()] == ["0", "1", "2"]
    hf_ax = fig.axes[1]
    hollow = [line for line in hf_ax.lines if line.get_markerfacecolor() == "white"]
    assert len(hollow) == 1 and list(hollow[0].get_ydata()) == pytest.approx([0.3, 0.1, -0.1])
    assert "hollow: after MLP" in hf_ax.get_title()


def test_hessian_figure_states_what_it_draws():
    g = torch.Generator().manual_seed(0)
    mae = torch.rand(6, 4, generator=g, dtype=torch.float64) * 10 + 0.5  # [minibatches, k]
    mff = mae * torch.exp(torch.randn(6, 4, generator=g, dtype=torch.float64) * 0.3 - 0.2)
    mff[0, 3] *= -1  # signs kept in the histogram, magnitudes in the ratio
    fig = plots.hessian_figure({"MAE": mae, "MFF-MAE": mff})
    hist, ratio = fig.axes
    title = hist.get_title()
    assert "max" not in title.lower()
    assert "top-4" in title and "pooled over 6 minibatches" in title
    assert all("max" not in t.get_text() for t in hist.get_legend().get_texts())
    expected = [float(np.mean([np.log(abs(float(mff[i, j])) / abs(float(mae[i, j])))
                               for j in range(4)])) for i in range(6)]
    points = [line for line in ratio.lines if line.get_marker() == "o"]
    assert len(points) == 1
    assert list(points[0].get_xdata()) == list(range(6))
    assert list(points[0].get_ydata()) == pytest.approx(expected, rel=1e-12)
    zero = [line for line in ratio.lines if line.get_marker() != "o"]
    assert len(zero) == 1 and set(zero[0].get_ydata()) == {0.0} and "0" in zero[0].get_label()
    assert "MFF-MAE" in ratio.get_ylabel() and "top 4" in ratio.get_ylabel()
    claim = findings.mff_flatter_hessian(mae, mff)  # the panel draws the claim's samples
    assert claim.n == 6 and claim.effect == pytest.approx(np.mean(expected), rel=1e-12)
    one = plots.hessian_figure({"MAE": mae})  # one model: no ratio panel
    assert len(one.axes) == 1 and "max" not in one.axes[0].get_title().lower()


def test_frequency_response_rows_and_json_round_trip():
    with_fused = _response([0.5, 0.2, -0.1], fused=0.3)
    assert with_fused.block_rows == [0, 1, 2] and with_fused.last_block_row == 2
    assert with_fused.fused_row == 3
    plain = _response([0.5, 0.2])
    assert plain.block_rows == [0, 1] and plain.last_block_row == 1 and plain.fused_row is None
    d = json.loads(json.dumps(with_fused.to_dict()))
    assert set(d) == {"freqs_pi", "names", "curves", "depth"} and d["names"][-1] == "fused"
    back = FrequencyResponse.from_dict(d)
    assert torch.equal(back.curves, with_fused.curves.double()) and back.names == with_fused.names
    assert torch.allclose(back.depth, with_fused.depth.double(), equal_nan=True)
    assert findings.shallow_layers_more_high_frequency("MFF", back).to_dict() == \
        findings.shallow_layers_more_high_frequency("MFF", with_fused).to_dict()


def test_to_jsonable_uses_to_dict(tmp_path):
    hist = FusionHistory(steps=torch.tensor([0, 10]), weights=torch.tensor([[0.5, 0.5], [0.6, 0.4]]),
                         layers=[0, 1])
    claim = findings.fusion_moves_shallow(hist)
    data = plots.to_jsonable({"history": hist, "claims": [claim], 0.5: np.float32(2.0)})
    assert data == {"history": hist.to_dict(), "claims": [claim.to_dict()], "0.5": 2.0}
    json.dumps(data)


def test_probe_scores_figure_draws_grouped_bars(tmp_path):
    fig = plots.probe_scores_figure({"MAE": {"linear cls": 0.5, "kNN cls": 0.25},
                                     "MFF-MAE": {"linear cls": 0.75, "kNN cls": 0.5}})
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert heights == [50.0, 25.0, 75.0, 50.0]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["linear cls", "kNN cls"]


def test_probe_scores_figure_draws_controls_and_baselines():
    """Four models (two at init, hatched) share each group without overlapping; a baseline is a
    labelled line at its accuracy."""
    scores = {name: {"linear mean": a, "kNN cls": a / 2} for name, a in
              (("MAE", 0.4), ("MFF-MAE", 0.5), ("MAE at init", 0.2), ("MFF-MAE at init", 0.2))}
    fig = plots.probe_scores_figure(scores, baselines={"raw pixels, linear": 0.18})
    ax = fig.axes[0]
    bars = sorted(ax.patches, key=lambda p: p.get_x())
    assert [round(p.get_height()) for p in bars[:4]] == [40, 50, 20, 20]
    assert all(a.get_x() + a.get_width() <= b.get_x() + 1e-9 for a, b in zip(bars, bars[1:]))
    assert [p.get_hatch() for p in bars[:4]] == [None, None, "//", "//"]
    line = next(l for l in ax.get_lines() if l.get_label().startswith("raw pixels"))
    assert line.get_ydata()[0] == pytest.approx(18.0) and "18.0 %" in line.get_label()


def _wilson(k, n, z=1.959963984540054):
    """The Wilson score interval, written out (independent of scipy)."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def test_probe_scores_figure_shows_chance_n_and_intervals():
    scores = {"MAE": {"linear cls": 0.5, "kNN cls": 0.25},
              "MFF-MAE": {"linear cls": 0.75, "kNN cls": 0.5}}
    fig = plots.probe_scores_figure(scores, n_test=64, n_classes=8)
    ax = fig.axes[0]
    assert [p.get_height() for p in ax.patches] == [50.0, 25.0, 75.0, 50.0]
    chance = [line for line in ax.lines if line.get_label().startswith("chance")]
    assert len(chance) == 1 and set(chance[0].get_ydata()) == {100 / 8}
    assert "1/8" in chance[0].get_label()
    assert "n = 64 test images" in ax.get_title() and "95 % Wilson" in ax.get_title()
    assert ax.get_ylim()[0] == 0
    bars = [c for c in ax.containers if isinstance(c, matplotlib.container.ErrorbarContainer)]
    assert len(bars) == 2
    for bar, s in zip(bars, scores.values()):
        segments = bar.lines[2][0].get_segments()  # one vertical segment per probe
        for seg, acc in zip(segments, s.values()):
            lo, hi = _wilson(round(acc * 64), 64)
            assert sorted(seg[:, 1]) == pytest.approx([100 * lo, 100 * hi], rel=1e-9)
    assert plots.wilson_interval(0.75, 64) == pytest.approx(_wilson(48, 64), rel=1e-9)
    plain = plots.probe_scores_figure(scores)  # the old call: no interval, no chance line
    assert not [c for c in plain.axes[0].containers
                if isinstance(c, matplotlib.container.ErrorbarContainer)]
    assert not plain.axes[0].lines and plain.axes[0].get_title() == ""


def test_fusion_weight_bars_start_at_zero():
    w = torch.tensor([[0.25] * 4, [0.26, 0.25, 0.245, 0.245]])
    fig = plots.fusion_weights_figure(FusionHistory(steps=torch.tensor([0, 100]), weights=w,
                                                    layers=[0, 3, 7, 11]))
    ax, bx = fig.axes
    assert bx.get_ylim()[0] == 0
    assert [p.get_height() for p in bx.patches] == pytest.approx(w[-1].tolist())
    for panel in (ax, bx):
        uniform = [line for line in panel.lines if line.get_label().startswith("uniform start")]
        assert len(uniform) == 1 and set(uniform[0].get_ydata()) == {0.25}
        assert "1/4" in uniform[0].get_label()
        assert "sums to 1" in panel.get_ylabel()
    assert [t.get_text() for t in bx.texts] == ["0.260", "0.250", "0.245", "0.245"]
