"""Every probe over training: weight snapshots (``snapshot_steps``), kept exactly across a resume,
and ``probes.over_training`` giving each probe's own numbers at each snapshot, cached; the PNG
feature's rename to pictures (``picture_every``) keeps older runs resumable."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from workbench import train
from workbench.__main__ import main
from workbench.checkpoints import load_checkpoint, save_weights
from workbench.core.config import model_config
from workbench.core.io import run_files
from workbench.data import fixed_batch
from workbench.models import model_from_config
from workbench.probes import (OVER_TRAINING_PROBES, frequency_response, layer_features,
                              linear_cka, over_training, over_training_probe, reconstruct)
from workbench.training import TrainConfig, resolve
from workbench.training.settings import snapshot_schedule

SMALL = dict(img_size=16, patch_size=4, embed_dim=64, depth=2, num_heads=2,
             decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)
STEPS = (0, 3, 10)


def small_cfg(out, **kw) -> TrainConfig:
    base = dict(kind="mff", model_overrides=dict(SMALL), steps=6, batch_size=8, base_lr=1e-2,
                warmup=2, log_every=1, ckpt_every=3, picture_every=0, eval_images=8,
                progress=False, knn_every=0, out=str(out))
    return TrainConfig(**{**base, **kw})


def hand_built_run(root: Path, kind: str = "mff") -> dict[int, torch.nn.Module]:
    """A run folder whose snapshots are models of known, different weights at STEPS."""
    files, models = run_files(root), {}
    for i, step in enumerate(STEPS):
        torch.manual_seed(100 + i)
        model = model_from_config(model_config(kind, "tiny", **SMALL)).eval()
        with torch.no_grad():  # far apart, so that steps swapped would show
            for p in model.parameters():
                p.mul_(1 + i)
        save_weights(model, files.snapshot(step), step=step)
        models[step] = load_checkpoint(files.snapshot(step))  # what over_training will read
    return models


def test_hand_built_snapshots_give_the_probes_own_values(tmp_path):
    models = hand_built_run(tmp_path / "run")
    imgs = fixed_batch("builtin", 16, 8, "heldout", 0)[0]  # the run has no config: builtin
    r = over_training(tmp_path / "run", "reconstruction_loss", images=8, mask_ratio=0.5)
    assert r.steps == list(STEPS) and r.names == ["loss"] and r.values.shape == (3, 1)
    direct = [reconstruct(m, imgs, 0.5, "random", 0).loss for m in models.values()]
    assert r.series("loss").tolist() == pytest.approx(direct, rel=1e-6)
    assert len(set(direct)) == 3  # the steps differ: a mix-up would fail
    f = over_training(tmp_path / "run", "frequency", images=8)
    for i, m in enumerate(models.values()):
        fr = frequency_response(m, imgs)
        assert f.names == fr.names
        assert f.values[i].tolist() == pytest.approx(fr.curves[:, -1].tolist(), rel=1e-6)
        assert np.allclose(f.results[i]["curves"], fr.curves.numpy(), rtol=1e-6, atol=0)
    c = over_training(tmp_path / "run", "cka_to_final", images=8)
    final = layer_features(models[10], imgs)
    for i, m in enumerate(models.values()):
        want = [linear_cka(a, b) for a, b in zip(layer_features(m, imgs), final)]
        assert c.values[i].tolist() == pytest.approx(want, rel=1e-6)
    assert c.values[-1].tolist() == pytest.approx([1.0, 1.0])
    # a callable of one's own, with settings as keyword arguments
    def weight_sum(model, scale):
        return {"w": scale * float(model.patch_embed.proj.weight.detach().abs().sum())}

    mine = over_training(tmp_path / "run", weight_sum, scale=2.0)
    assert mine.names == ["w"] and mine.series().tolist() == pytest.approx(
        [weight_sum(m, 2.0)["w"] for m in models.values()])


def test_the_cache_returns_the_same_numbers_without_measuring(tmp_path):
    hand_built_run(tmp_path / "run", kind="mae")
    calls = []

    def count(model, images):
        calls.append(images)
        return {"mean": float(model.pos_embed.mean()), "images": images}

    first = over_training(tmp_path / "run", count, images=4)
    assert len(calls) == 3 and first.cached == [False] * 3
    again = over_training(tmp_path / "run", count, images=4)
    assert len(calls) == 3 and again.cached == [True] * 3  # not called again
    assert np.array_equal(first.values, again.values) and first.results == again.results
    over_training(tmp_path / "run", count, images=5)  # other settings: measured anew
    assert len(calls) == 6
    over_training(tmp_path / "run", count, images=4, cache=False)
    assert len(calls) == 9
    # a snapshot rewritten with other weights is measured again; the others are not
    torch.manual_seed(7)
    save_weights(model_from_config(model_config("mae", "tiny", **SMALL)),
                 run_files(tmp_path / "run").snapshot(3), step=3)
    third = over_training(tmp_path / "run", count, images=4)
    assert len(calls) == 10 and third.cached == [True, False, True]
    assert third.values[1, 0] != first.values[1, 0]
    # a registered probe: the same, read back from probe_cache/ exactly
    seen = []

    @over_training_probe("test_counted", lambda r: {"loss": r["loss"]}, images=4, seed=0,
                         data=None)
    def counted(model, inputs, images, seed, data):
        seen.append(seed)
        return {"loss": reconstruct(model, inputs.images(images, seed, data), seed=seed).loss}

    try:
        a = over_training(tmp_path / "run", "test_counted")
        b = over_training(tmp_path / "run", "test_counted")
        assert len(seen) == 3 and b.cached == [True] * 3
        assert a.values.tolist() == b.values.tolist() and a.to_dict() != {}
        json.dumps(b.to_dict())  # JSON-ready
        with pytest.raises(ValueError, match="takes the settings"):
            over_training(tmp_path / "run", "test_counted", mask_ratio=0.5)
    finally:
        OVER_TRAINING_PROBES.unregister("test_counted")
    assert "test_counted" not in OVER_TRAINING_PROBES
    with pytest.raises(ValueError, match="over-training probe must be one of"):
        over_training(tmp_path / "run", "no_such_probe")
    with pytest.raises(FileNotFoundError, match="snapshot_steps=log"):
        over_training(tmp_path / "empty", "frequency")


def test_a_resumed_run_keeps_the_snapshot_series_exactly(tmp_path, capsys):
    kw = dict(snapshot_steps=[1, 3, 4, 6])
    train(small_cfg(tmp_path / "straight", **kw))
    assert "snapshots: 5 steps (0, 1, 3, 4, 6)" in capsys.readouterr().out
    train(small_cfg(tmp_path / "resumed", stop_after=3, **kw))
    assert "snapshots: 3 steps (0, 1, 3) (to the stop at step 3)" in capsys.readouterr().out
    files = run_files(tmp_path / "resumed")
    assert list(files.snapshot_series()) == [0, 1, 3]
    files.snapshot(4).write_bytes(b"left by a run killed past its checkpoint")
    train(small_cfg(tmp_path / "resumed", resume=True, **kw))
    a, b = (run_files(tmp_path / x).snapshot_series() for x in ("straight", "resumed"))
    assert list(a) == list(b) == [0, 1, 3, 4, 6]
    for step in a:
        assert a[step].read_bytes() == b[step].read_bytes(), step  # bit for bit
    # a snapshot holds the weights of that step, encoder and decoder, and loads as a model
    final = load_checkpoint(tmp_path / "straight" / "checkpoint.pt").state_dict()
    kept = load_checkpoint(a[6])
    assert kept.has_decoder and kept.checkpoint_info.step == 6
    assert all(torch.equal(final[k], v) for k, v in kept.state_dict().items())
    assert a[6].stat().st_size < 0.6 * (tmp_path / "straight" / "checkpoint.pt").stat().st_size


def test_snapshot_steps_parsing():
    def steps(spec, n=300):
        return snapshot_schedule(resolve(TrainConfig(steps=n, snapshot_steps=spec)))

    assert steps("log") == [0, 1, 2, 5, 10, 20, 50, 100, 200, 300]
    assert steps("log", 1000) == [0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]
    assert steps([50, 10, 10]) == [0, 10, 50] and steps((300,)) == [0, 300]
    assert steps(None) == [] and steps([]) == [] and steps("none") == []
    for bad in ("lg", "sometimes", [1, -1], [1, 400], [1.5], 5, [True]):
        with pytest.raises(ValueError, match="snapshot_steps must be 'log', a list"):
            steps(bad)
    with pytest.raises(ValueError, match="snapshot_steps keeps a masked autoencoder"):
        resolve(TrainConfig(objective="supervised", snapshot_steps="log"))


def test_cli_snapshot_steps_error_names_the_setting(capsys):
    assert main(["train", "--set", "snapshot_steps=sometimes", "--out", "/nonexistent/x"]) == 1
    assert "snapshot_steps must be" in capsys.readouterr().err


def test_older_configs_with_snapshot_every_resume_as_pictures(tmp_path, capsys):
    assert TrainConfig.from_dict({"snapshot_every": 7}).picture_every == 7
    assert TrainConfig.from_dict({"snapshot_every": 7, "picture_every": 3}).picture_every == 3
    out = tmp_path / "old"
    train(small_cfg(out, picture_every=2, stop_after=2))
    ck = torch.load(out / "checkpoint.pt", weights_only=True)  # as a run of before the rename
    saved = ck["train_config"]
    saved["snapshot_every"] = saved.pop("picture_every")
    torch.save(ck, out / "checkpoint.pt")
    args = ["train", "--resume", "--out", str(out), "--no-progress", "--device", "cpu"]
    assert main(args) == 0, capsys.readouterr().err
    assert sorted(p.name for p in (out / "pictures").iterdir()) == \
        ["step_000002.png", "step_000004.png", "step_000006.png"]
    assert json.loads((out / "config.json").read_text())["train_config"]["picture_every"] == 2
    # the shipped weights' config.json was written before the rename: still read
    shipped = Path(__file__).resolve().parents[1] / "weights" / "mae-tiny"
    train_cfg = run_files(shipped).read_settings()[1]
    assert "snapshot_every" in train_cfg
    assert TrainConfig.from_dict(train_cfg).picture_every == train_cfg["snapshot_every"]


def test_over_training_figure_draws_steps_and_seed_bands(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from workbench.plots import over_training_figure

    for seed, kind in ((0, "mae"), (1, "mae")):
        hand_built_run(tmp_path / f"{kind}{seed}", kind=kind)
    runs = [over_training(tmp_path / f"mae{s}", "reconstruction_loss", images=4, seed=s)
            for s in (0, 1)]
    fig = over_training_figure({"MAE": runs, "one seed": runs[0]})
    ax = fig.axes[0]
    assert ax.get_xscale() == "symlog"
    lines = {l.get_label(): l for l in ax.get_lines()}
    mean = np.mean([r.series() for r in runs], axis=0)
    assert lines["MAE: loss (mean, min-max of 2 seeds)"].get_xdata().tolist() == list(STEPS)
    assert np.allclose(lines["MAE: loss (mean, min-max of 2 seeds)"].get_ydata(), mean)
    assert np.allclose(lines["one seed: loss"].get_ydata(), runs[0].series())
    assert len(ax.collections) == 1  # one band: the group of two seeds
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    lo, hi = np.min([r.series() for r in runs], axis=0), np.max([r.series() for r in runs], axis=0)
    assert band.min() == pytest.approx(lo.min()) and band.max() == pytest.approx(hi.max())
