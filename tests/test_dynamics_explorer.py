"""The training-dynamics pieces over weight snapshots: the models at each shared step
(``probes.SnapshotModels``), the reconstruction explorer's step slider, the dynamics explorer's
panel and pictures, and each headline number's change from the first snapshot to the last."""
from __future__ import annotations

import json

import matplotlib
import numpy as np
import pytest
import torch

from test_over_training import STEPS, hand_built_run
from workbench.data import fixed_batch
from workbench.experiments import dynamics, figures
from workbench.experiments.findings import decide
from workbench.probes import SnapshotModels, over_training, reconstruct
from workbench.widgets import DynamicsExplorer, ReconstructionExplorer

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Hand-built MAE and MFF-MAE runs: known, different weights at each of STEPS."""
    root = tmp_path_factory.mktemp("pair")
    models = {"MAE": hand_built_run(root / "mae", kind="mae"),
              "MFF-MAE": hand_built_run(root / "mff", kind="mff")}
    return {"MAE": root / "mae", "MFF-MAE": root / "mff"}, models


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_snapshot_models_load_each_step_and_keep_only_what_is_asked(pair, tmp_path):
    runs, models = pair
    snaps = SnapshotModels(runs, keep=2)
    assert snaps.steps == list(STEPS)
    for step in STEPS:
        for label in runs:
            assert same_weights(snaps[step][label], models[label][step]), (label, step)
    assert list(snaps.loaded) == list(STEPS[-2:])  # the least recently shown was dropped
    snaps[STEPS[1]]
    assert list(snaps.loaded) == [STEPS[2], STEPS[1]]
    with pytest.raises(KeyError, match="share steps"):
        snaps[4]
    hand_built_run(tmp_path / "other")  # snapshots at the same steps: shared
    (tmp_path / "other" / "snapshots" / f"step_{STEPS[1]:06d}.safetensors").unlink()
    assert SnapshotModels({"a": runs["MAE"], "b": tmp_path / "other"}).steps == [STEPS[0], STEPS[2]]
    with pytest.raises(FileNotFoundError, match="snapshot_steps"):
        SnapshotModels({"a": tmp_path / "nothing"})


def test_the_step_slider_shows_that_steps_models(pair):
    runs, models = pair
    imgs = fixed_batch("builtin", 16, 2, "heldout", 0)[0]
    ex = ReconstructionExplorer.from_runs(runs, imgs, mask_ratio=0.5)
    assert ex.step.options == tuple(STEPS) and ex.step.value == STEPS[-1]  # starts at the last
    for step in (STEPS[0], STEPS[1]):
        ex.step.value = step
        for label, r in ex.results.items():  # what it shows is that step's model's own
            want = reconstruct(models[label][step], imgs[:1], 0.5, "random", 0)
            assert r.loss == pytest.approx(want.loss, rel=1e-6), (label, step)
        assert f"step {step} ·" in ex.status.value
        assert ex.save.name().startswith(f"reconstruction-step{step}-")
    pictures = set()
    for step in STEPS:
        ex.step.value = step
        pictures.add(bytes(ex.image.value))
    assert len(pictures) == len(STEPS)  # the weights differ, so do the pictures
    plain = ReconstructionExplorer({"MAE": models["MAE"][0]}, imgs)
    assert plain.step is None and "step" not in plain.status.value.split("·")[0]


def test_dynamics_explorer_panel_is_the_probes_results_at_the_step(pair, tmp_path):
    runs, models = pair
    imgs = fixed_batch("builtin", 16, 2, "heldout", 0)[0]
    probes = {"frequency": dict(images=4), "fusion": {}, "attention_distance": dict(images=2)}
    app = DynamicsExplorer(runs, imgs, probes=probes)
    assert sorted(app.series) == ["attention_distance", "frequency", "fusion"]
    assert list(app.series["fusion"]) == ["MFF-MAE"]  # an MAE has no fusion weights
    at = app.at(STEPS[1])
    direct = over_training(runs["MAE"], "frequency", images=4)
    assert at["frequency"]["MAE"] == direct.results[1]
    assert len(set(app.panels.values())) == len(STEPS)
    for step in STEPS:
        app.step.value = step
        assert app.panel.value == app.panels[step] and app.explorer.models.keys() == runs.keys()
    timing = app.latency(repeats=1)
    assert timing["updates"] == len(STEPS) and app.step.value == STEPS[-1]
    paths = app.save_steps(tmp_path / "out")
    assert [p.rsplit("/", 1)[1] for p in paths] == [
        "dynamics-step0-reconstruction.png", "dynamics-step0-probes.png",
        "dynamics-step10-reconstruction.png", "dynamics-step10-probes.png"]
    assert open(paths[3], "rb").read() == app.panels[STEPS[-1]]
    assert open(paths[0], "rb").read()[:8] == b"\x89PNG\r\n\x1a\n"
    assert app.step.value == STEPS[-1]  # the slider ends where it was


def test_change_over_training_is_end_minus_start_with_a_t_interval_over_seeds(tmp_path):
    seeds = []
    for s in range(3):
        hand_built_run(tmp_path / f"mae{s}", kind="mae")
        seeds.append(over_training(tmp_path / f"mae{s}", "reconstruction_loss", images=4,
                                   seed=s))
    changes = np.array([r.series()[-1] - r.series()[0] for r in seeds])
    row = dynamics.change_over_training(seeds, "loss")
    assert row["change"] == pytest.approx(changes.mean()) and row["seeds"] == 3
    assert row["per_seed"] == pytest.approx(changes.tolist())
    assert row["ci"] == pytest.approx(decide(changes, test="t").ci)
    assert row["ci"][0] < row["change"] < row["ci"][1]
    one = dynamics.change_over_training(seeds[:1], "loss")
    assert one["ci"] is None and one["change"] == pytest.approx(changes[0])
    table = dynamics.change_table({"reconstruction_loss": {"MAE": seeds}})
    assert [(r["probe"], r["model"], r["name"]) for r in table] == [
        ("reconstruction_loss", "MAE", "loss")]
    text = dynamics.change_markdown(table + [{**table[0], "ci": None, "seeds": 1}])
    assert f"{row['change']:+.3f}" in text and "one seed: none" in text


def test_dynamics_series_and_figures_over_models_and_seeds(pair, tmp_path):
    runs, _ = pair
    probes = {"reconstruction_loss": dict(images=4), "fusion": {}}
    series = dynamics.dynamics_series({"MAE": runs["MAE"], "MFF-MAE": [runs["MFF-MAE"]] * 2},
                                      probes)
    assert {p: {k: len(v) for k, v in m.items()} for p, m in series.items()} == {
        "reconstruction_loss": {"MAE": 1, "MFF-MAE": 2}, "fusion": {"MFF-MAE": 2}}
    paths = dynamics.dynamics_figures(series, tmp_path)
    names = sorted(p.name for p in paths)
    assert "over_training_fusion.png" in names and "over_training_reconstruction_loss.json" in names
    saved = json.loads((tmp_path / "over_training_reconstruction_loss.json").read_text())
    assert saved["MAE"][0]["values"] == series["reconstruction_loss"]["MAE"][0].values.tolist()


def test_only_the_notebooks_that_need_the_dynamics_runs_get_their_folders():
    common = {"MAE_CHECKPOINT": "a", "MAE_DYNAMICS_RUN": "d1", "MFF_DYNAMICS_RUN": "d2"}
    assert figures.entry_parameters({"name": "x"}, common) == {"MAE_CHECKPOINT": "a"}
    assert figures.entry_parameters({"needs": ["mae_dynamics", "mff_dynamics"]}, common) == common
    assert figures.entry_parameters({"needs": ["mff_dynamics"]}, common) == {
        "MAE_CHECKPOINT": "a", "MFF_DYNAMICS_RUN": "d2"}
