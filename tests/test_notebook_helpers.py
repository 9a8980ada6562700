"""Package functions the notebooks call instead of inline code: load_models, the mask-ratio
sweep, and the reconstruction explorer's latency run."""
from __future__ import annotations

import json

import pytest
import torch

from workbench import build_model

from workbench.experiments import findings
from workbench.checkpoints import load_models, save_checkpoint
from workbench.experiments.sweeps import MaskRatioSweep, mask_ratio_sweep, sweep_run_dir
from workbench.widgets import ReconstructionExplorer

SMALL = dict(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2,
             decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)


def test_load_models_by_name_in_eval_mode(tmp_path):
    torch.manual_seed(0)
    built = {"MAE": build_model("mae", **SMALL), "MFF-MAE": build_model("mff", **SMALL)}
    for name, m in built.items():
        save_checkpoint(m, tmp_path / f"{name}.pt")
    models = load_models({"MAE": tmp_path / "MAE.pt", "MFF-MAE": str(tmp_path / "MFF-MAE.pt")})
    assert list(models) == ["MAE", "MFF-MAE"]
    assert not any(m.training for m in models.values())
    assert [m.has_fusion for m in models.values()] == [False, True]
    for name, m in models.items():
        for k, v in built[name].state_dict().items():
            assert torch.equal(m.state_dict()[k], v), k
    with pytest.raises(FileNotFoundError):
        load_models({"MAE": tmp_path / "missing.pt"})


def test_mask_ratio_sweep_trains_measures_and_reuses(tmp_path):
    kw = dict(steps=2, batch_size=8, n_probe=24, runs_dir=tmp_path / "runs", model_overrides=SMALL)
    sweep = mask_ratio_sweep([0.5, 0.75], **kw)
    assert isinstance(sweep, MaskRatioSweep) and sweep.ratios == [0.5, 0.75] and sweep.steps == 2
    for ratio in (0.5, 0.75):
        assert (sweep_run_dir(tmp_path / "runs", "mae", ratio, 2, 8, 0) / "checkpoint.pt").exists()
    # at ratio 0.75 the loss at the model's own ratio is the loss at 0.75
    assert sweep.loss_own_ratio[0.75] == sweep.loss_at_075[0.75]
    assert all(0.0 <= a <= 1.0 for a in sweep.accuracies)
    d = json.loads(json.dumps(sweep.to_dict()))
    assert d["ratios"] == [0.5, 0.75] and set(d["linear_probe"]) == {"0.5", "0.75"}
    assert d["loss_at_075"]["0.5"] == sweep.loss_at_075[0.5]
    assert list(sweep.loss_curves) == ["loss at own ratio", "loss at 0.75"]
    assert sweep.correct_matrix.shape == (2, 24) and sweep.probe_data == "shapes"
    assert sweep.accuracies == pytest.approx(sweep.correct_matrix.mean(1).tolist())
    assert findings.high_mask_ratio_best(sweep.ratios, sweep.correct_matrix).verdict in \
        findings.VERDICTS
    # run again: the finished runs are reused, and the numbers are the same
    again = mask_ratio_sweep([0.5, 0.75], **kw)
    assert again.to_dict() == sweep.to_dict()
    # checkpoints instead of runs
    ckpts = {r: sweep_run_dir(tmp_path / "runs", "mae", r, 2, 8, 0) / "checkpoint.pt"
             for r in (0.5, 0.75)}
    loaded = mask_ratio_sweep([0.5, 0.75], **{**kw, "runs_dir": tmp_path / "none"},
                              checkpoints=ckpts)
    assert loaded.to_dict() == sweep.to_dict() and not (tmp_path / "none").exists()


@pytest.mark.parametrize("mask_ratio", [0.6, 0.95])
def test_latency_ends_at_the_notebooks_mask_ratio(mask_ratio):
    """reconstruction.ipynb's last cell times the slider, and a Run All must leave the explorer
    showing MASK_RATIO: the slider, the masked count and the status text. 0.6 is not among the
    ratios latency() visits, 0.95 is its last one."""
    torch.manual_seed(0)
    models = {"MAE": build_model("mae", **SMALL).eval(), "MFF-MAE": build_model("mff", **SMALL).eval()}
    imgs = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    app = ReconstructionExplorer(models, imgs, mask_ratio=mask_ratio)
    app.latency(repeats=1)  # the notebook's ratios, 0.05 .. 0.95 (once over, for speed)
    masked = 16 - int(16 * (1 - mask_ratio))  # 16 patches, int(N * (1 - ratio)) kept
    assert app.ratio.value == mask_ratio
    assert app.masked_count == masked and int(app.results["MAE"].mask.sum()) == masked
    assert f"{masked}/16 patches masked" in app.status.value
