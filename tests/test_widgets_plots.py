"""Widget callbacks and plot/save helpers, exercised without a browser."""
from __future__ import annotations

import json

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")

from workbench import build_model, findings, plots  # noqa: E402
from workbench.probes import FrequencyResponse, FusionHistory, reconstruct  # noqa: E402
from workbench.widgets import ReconstructionExplorer, compose_rows  # noqa: E402

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


def test_save_figure_writes_png_svg_html_and_json(tmp_path, models, imgs):
    res = {n: reconstruct(m, imgs, 0.75, seed=0) for n, m in models.items()}
    fig = plots.reconstruction_grid(res)
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
    falling = _response([0.5, 0.2, -0.1, -0.4], fused=0.3)
    rising = _response([-0.4, -0.1, 0.2, 0.5])
    assert findings.shallow_layers_more_high_frequency("MAE", falling).held is True
    assert findings.shallow_layers_more_high_frequency("MAE", rising).held is False
    assert findings.mff_last_layer_less_high_frequency(rising, falling).held is True
    assert findings.mff_last_layer_less_high_frequency(falling, rising).held is False
    to_shallow = FusionHistory(steps=torch.tensor([0, 100]),
                               weights=torch.tensor([[1 / 3] * 3, [0.5, 0.3, 0.2]]), layers=[0, 2, 5])
    claim = findings.fusion_moves_shallow(to_shallow)
    assert claim.held is True and "0.200" in claim.measured
    to_deep = FusionHistory(steps=torch.tensor([0, 100]),
                            weights=torch.tensor([[1 / 3] * 3, [0.2, 0.3, 0.5]]), layers=[0, 2, 5])
    assert findings.fusion_moves_shallow(to_deep).held is False
    assert findings.mff_flatter_hessian(torch.tensor([[3.0], [5.0]]), torch.tensor([[1.0], [2.0]])).held
    assert findings.high_mask_ratio_best([0.25, 0.5, 0.75, 0.9], [0.3, 0.4, 0.6, 0.5]).held
    assert not findings.high_mask_ratio_best([0.25, 0.5, 0.75, 0.9], [0.6, 0.4, 0.3, 0.5]).held


def test_frequency_and_hessian_figures_draw(tmp_path):
    fig = plots.frequency_figure({"MAE": _response([0.5, 0.1, -0.2]),
                                  "MFF-MAE": _response([0.4, 0.0, -0.3], fused=0.1)})
    assert len(fig.axes) == 3 and len(fig.axes[1].lines) == 4  # 3 blocks + fused
    fig = plots.hessian_figure({"MAE": torch.tensor([[5.0, 1.0], [4.0, -0.5]]),
                                "MFF-MAE": torch.tensor([[2.0, 0.5], [1.5, -0.1]])})
    assert fig.axes[0].get_yscale() == "log"
    assert len(plots.save_figure(fig, tmp_path, "hessian")) == 2
