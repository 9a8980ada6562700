"""Fusion weights from a run's metrics.jsonl and from a model."""
from __future__ import annotations

import json

import pytest
import torch

from workbench import build_model
from workbench.checkpoints import load_checkpoint, save_checkpoint
from workbench.core.config import default_fuse_layers
from workbench.probes import FusionHistory, NoFusionError, fusion_history, fusion_state

SMALL = dict(img_size=16, patch_size=4, embed_dim=32, depth=4, num_heads=2,
             decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)
WEIGHTS = [[0.25, 0.25, 0.25, 0.25], [0.3, 0.2, 0.125, 0.375], [0.4, 0.1, 0.0625, 0.4375]]


def write_run(path, weights=WEIGHTS, layers=(0, 1, 2, 3), with_layers=True, config=None):
    path.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, w in enumerate(weights):
        rec = {"step": 10 * (i + 1), "loss": 1.0 / (i + 1), "lr": 1e-4, "images_per_s": 100.0,
               "fusion_weights": w}
        if with_layers:
            rec["fuse_layers"] = list(layers)
        lines.append(json.dumps(rec))
        lines.append(json.dumps({"step": 10 * (i + 1), "eval_loss": 0.5}))  # no weights
    (path / "metrics.jsonl").write_text("\n".join(lines) + "\n\n")
    if config is not None:
        (path / "config.json").write_text(json.dumps(config))
    return path


def test_history_reads_back_exactly(tmp_path):
    h = fusion_history(write_run(tmp_path / "run"))
    assert h.steps.tolist() == [10, 20, 30]
    assert h.weights.tolist() == WEIGHTS and h.weights.dtype == torch.float64
    assert h.layers == [0, 1, 2, 3]
    assert fusion_history(tmp_path / "run" / "metrics.jsonl").weights.tolist() == WEIGHTS


def test_history_of_a_run_logged_under_the_older_key(tmp_path):
    """Runs before the rename logged the layers as ``fused_layers`` (the shipped MFF-MAE did)."""
    path = write_run(tmp_path / "run", layers=(0, 1, 3, 5))
    text = (path / "metrics.jsonl").read_text().replace('"fuse_layers"', '"fused_layers"')
    (path / "metrics.jsonl").write_text(text)
    assert fusion_history(path).layers == [0, 1, 3, 5]


def test_layers_from_config(tmp_path):
    run = write_run(tmp_path / "a", with_layers=False,
                    config={"model": {"kind": "mff", "depth": 12, "fuse_layers": [1, 5, 9, 11]}})
    assert fusion_history(run).layers == [1, 5, 9, 11]
    run = write_run(tmp_path / "b", with_layers=False,
                    config={"model": {"kind": "mff", "depth": 4, "fuse_layers": None}})
    assert fusion_history(run).layers == default_fuse_layers(4) == [0, 1, 2, 3]
    run = write_run(tmp_path / "c", with_layers=False)
    with pytest.raises(ValueError, match="which layers"):
        fusion_history(run)


def test_errors(tmp_path):
    mae = tmp_path / "mae"
    mae.mkdir()
    (mae / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 1.0, "lr": 0.1}) + "\n")
    with pytest.raises(NoFusionError, match="MAE"):
        fusion_history(mae)
    with pytest.raises(ValueError, match="normalised"):
        fusion_history(write_run(tmp_path / "logits", weights=[[1.0, 2.0, 0.5, 0.1]]))
    cut = write_run(tmp_path / "cut")  # a last line cut short by a killed run: skipped
    with open(cut / "metrics.jsonl", "a") as f:
        f.write('{"step": 40, "fusion_weig')
    with pytest.warns(UserWarning, match=r"metrics.jsonl:8 is an incomplete last record"):
        assert fusion_history(cut).weights.tolist() == WEIGHTS
    bad = write_run(tmp_path / "bad")  # a damaged line before others: an error naming it
    text = (bad / "metrics.jsonl").read_text().splitlines()
    text.insert(2, "{not json")
    (bad / "metrics.jsonl").write_text("\n".join(text) + "\n")
    with pytest.raises(ValueError, match=r"metrics.jsonl:3 is not valid JSON"):
        fusion_history(bad)
    with pytest.raises(ValueError, match="4 fusion weights"):
        fusion_history(write_run(tmp_path / "n", layers=(0, 3), with_layers=True))
    with pytest.raises(FileNotFoundError):
        fusion_history(tmp_path / "missing")


def test_weights_of_a_model(tmp_path):
    torch.manual_seed(0)
    model = build_model("mff", **SMALL)
    state = fusion_state(model)
    assert state.layers == [0, 1, 2, 3] and torch.allclose(state.weights, torch.full((4,), 0.25))
    with torch.no_grad():
        model.fusion.logits.copy_(torch.tensor([2.0, 0.0, 0.0, 1.0]))
    save_checkpoint(model, tmp_path / "mff.pt")
    state = fusion_state(load_checkpoint(tmp_path / "mff.pt"))
    assert torch.allclose(state.weights, torch.softmax(torch.tensor([2.0, 0.0, 0.0, 1.0]), 0))
    d = json.loads(json.dumps(state.to_dict()))
    assert d["layers"] == [0, 1, 2, 3] and d["weights"] == pytest.approx(state.weights.tolist())
    with pytest.raises(NoFusionError, match="only MFF"):
        fusion_state(build_model("mae", **SMALL))


def test_history_to_dict_round_trips_through_json(tmp_path):
    history = fusion_history(write_run(tmp_path / "run"))
    d = json.loads(json.dumps(history.to_dict()))
    assert d == {"steps": history.steps.tolist(), "weights": WEIGHTS, "layers": [0, 1, 2, 3]}
    back = FusionHistory.from_dict(d)
    assert torch.equal(back.steps, history.steps) and torch.equal(back.weights, history.weights)
    assert back.layers == history.layers
