"""Widget callbacks and plot/save helpers, exercised without a browser."""
from __future__ import annotations

import json

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")

from workbench import build_model, findings, plots  # noqa: E402
from workbench.pictures import COLUMNS, compose_rows, image_hwc, png_bytes  # noqa: E402
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
    """widgets.compose_rows as it was before workbench.pictures (the explorer's pixels)."""
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


def _old_snapshot(r, scale=4):
    """train.reconstruction_grid's pixels before workbench.pictures: original | masked (black) |
    pasted, one row per image, no gaps, nearest upscaling."""
    rows = [torch.cat([a, m, c], dim=2) for a, m, c in zip(r.original, r.masked, r.pasted)]
    arr = (torch.cat(rows, dim=1).float().permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    return arr.repeat(scale, axis=0).repeat(scale, axis=1)


def test_pictures_keep_the_old_pixels(models, imgs):
    res = {n: reconstruct(m, imgs, 0.5, seed=3) for n, m in models.items()}
    for index, scale, pad in ((0, 4, 2), (2, 2, 1), (1, 3, 0), (0, 1, 2)):
        assert np.array_equal(compose_rows(res, index, scale, pad),
                              _old_compose_rows(res, index, scale, pad))
    # the training snapshot: several images of one model, chosen columns, no gaps
    r = reconstruct(models["MFF-MAE"], imgs, 0.75, seed=0, fill=0.0)
    snap = compose_rows(r, range(3), scale=4, pad=0, columns=("original", "masked", "pasted"))
    old = _old_snapshot(r)
    assert snap.shape == old.shape == (3 * 64, 3 * 64, 3)
    assert np.abs(snap.astype(int) - old.astype(int)).max() <= 1  # rounding of exact halves
    # rows: image by image, model by model
    two = compose_rows(res, [2, 0], scale=1, pad=0)
    assert np.array_equal(two[16:32], compose_rows(res["MFF-MAE"], 2, scale=1, pad=0))
    assert np.array_equal(two[32:48], compose_rows(res["MAE"], 0, scale=1, pad=0))
    assert png_bytes(two)[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="nothing to draw"):
        compose_rows(res, [], scale=1)


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


def test_frequency_and_hessian_figures_draw(tmp_path):
    fig = plots.frequency_figure({"MAE": _response([0.5, 0.1, -0.2]),
                                  "MFF-MAE": _response([0.4, 0.0, -0.3], fused=0.1)})
    assert len(fig.axes) == 3 and len(fig.axes[1].lines) == 4  # 3 blocks + fused
    fig = plots.hessian_figure({"MAE": torch.tensor([[5.0, 1.0], [4.0, -0.5]]),
                                "MFF-MAE": torch.tensor([[2.0, 0.5], [1.5, -0.1]])})
    assert fig.axes[0].get_yscale() == "log"
    assert len(plots.save_figure(fig, tmp_path, "hessian")) == 2


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
