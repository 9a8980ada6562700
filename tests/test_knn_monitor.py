"""The kNN monitor during pretraining: DINO's weighted vote against a brute-force reference, the
logged knn_acc, and runs whose weights do not depend on whether it is on."""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from workbench.checkpoints import read_checkpoint
from workbench.probes.linear import weighted_knn_predictions
from workbench import TrainConfig, train
from workbench.probes.monitor import build_monitor, knn_data_for

SMALL = dict(img_size=16, patch_size=4, embed_dim=64, depth=2, num_heads=2,
             decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)


def small_run(out: Path, **kw) -> TrainConfig:
    base = dict(kind="mae", model_overrides=dict(SMALL), steps=5, batch_size=8, base_lr=1e-2,
                warmup=1, log_every=10, ckpt_every=0, picture_every=0, eval_images=8,
                progress=False, knn_every=2, knn_images=64, out=str(out))
    return TrainConfig(**{**base, **kw})


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line]


def brute_force_knn(xtr, ytr, xte, k, temperature):
    """One query at a time: cosine similarities, the k largest, weighted class votes."""
    preds = []
    for q in xte:
        sims = [float(np.dot(q, x) / (np.linalg.norm(q) * np.linalg.norm(x))) for x in xtr]
        top = sorted(range(len(xtr)), key=lambda i: -sims[i])[:k]
        votes: dict[int, float] = {}
        for i in top:
            votes[int(ytr[i])] = votes.get(int(ytr[i]), 0.0) + math.exp(sims[i] / temperature)
        preds.append(max(votes, key=votes.get))
    return preds


@pytest.mark.parametrize("k, temperature", [(1, 0.07), (5, 0.07), (20, 0.5), (200, 0.07)])
def test_weighted_knn_matches_a_brute_force_vote(k, temperature):
    rng = np.random.default_rng(k)
    xtr, ytr = rng.normal(size=(60, 8)), rng.integers(0, 4, 60)
    xte = rng.normal(size=(25, 8))
    ours = weighted_knn_predictions(torch.tensor(xtr), torch.tensor(ytr), torch.tensor(xte),
                                    k, temperature)
    assert ours.tolist() == brute_force_knn(xtr, ytr, xte, min(k, 60), temperature)
    with pytest.raises(ValueError, match="k must be"):
        weighted_knn_predictions(torch.tensor(xtr), torch.tensor(ytr), torch.tensor(xte), 0)


def test_monitor_logs_knn_acc_and_leaves_the_weights_alone(tmp_path):
    on = train(small_run(tmp_path / "on"))
    off = train(small_run(tmp_path / "off", knn_every=0))
    rows = records(tmp_path / "on")
    logged = [(r["step"], r["knn_acc"], r["probe_acc"]) for r in rows if "knn_acc" in r]
    assert [s for s, _, _ in logged] == [0, 2, 4, 5]  # step 0, every 2, the last
    assert all(0.0 <= a <= 1.0 and 0.0 <= b <= 1.0 for _, a, b in logged)
    assert not any("knn_acc" in r for r in records(tmp_path / "off"))
    # the monitor draws nothing from the training's generators: the same weights
    assert on.heldout_loss == off.heldout_loss
    a, b = (read_checkpoint(Path(r.checkpoint))["model"] for r in (on, off))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_monitor_readings_are_the_vote_and_the_probe_on_mean_pooled_features(tmp_path):
    from workbench import build_model
    from workbench.probes import extract_features
    from workbench.probes.linear import linear_predictions
    from workbench.probes.monitor import MONITOR_C

    model = build_model("mae", "tiny", **SMALL)
    monitor = build_monitor("builtin", None, 16, 64)
    assert (len(monitor.bank), len(monitor.queries)) == (32, 32)
    xtr, ytr = extract_features(model, (monitor.bank, monitor.bank_labels), pool="mean")
    xte, yte = extract_features(model, (monitor.queries, monitor.query_labels), pool="mean")
    pred = weighted_knn_predictions(torch.tensor(xtr), torch.tensor(ytr), torch.tensor(xte))
    probe = linear_predictions(xtr, ytr, xte, C=MONITOR_C)
    readings = monitor.measure(model)
    assert readings["knn_acc"] == pytest.approx(float((pred.numpy() == yte).mean()))
    assert readings["probe_acc"] == pytest.approx(float((probe == yte).mean()))
    assert monitor.accuracy(model) == readings["knn_acc"]


def test_resume_with_the_monitor_is_exact(tmp_path):
    straight = train(small_run(tmp_path / "straight", steps=6))
    train(small_run(tmp_path / "cut", steps=6, stop_after=3, ckpt_every=3))
    resumed = train(small_run(tmp_path / "cut", steps=6, resume=True))
    assert resumed.heldout_loss == straight.heldout_loss
    a, b = (read_checkpoint(Path(r.checkpoint))["model"] for r in (straight, resumed))
    assert all(torch.equal(a[k], b[k]) for k in a)
    knn = {d: [(r["step"], r["knn_acc"]) for r in records(tmp_path / d) if "knn_acc" in r]
           for d in ("straight", "cut")}
    assert knn["cut"] == knn["straight"]


def test_which_labelled_images_and_a_folder_that_cannot_serve(tmp_path):
    assert knn_data_for("builtin", None) == "shapes" and knn_data_for("shapes", None) == "shapes"
    assert knn_data_for("/data/imagenet", None) == "/data/imagenet"
    assert knn_data_for("builtin", "/my/labels") == "/my/labels"
    folder = tmp_path / "imgs"
    for c in ("a", "b"):
        (folder / c).mkdir(parents=True)
        for k in range(3):  # no held-out images: every 10th file of a class is held out
            Image.new("RGB", (20, 20), (80 * k, 60, 20)).save(folder / c / f"{k}.png")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        result = train(small_run(tmp_path / "run", data=str(folder), steps=2))
    assert any("kNN monitor off" in str(w.message) for w in seen)
    assert result.step == 2 and not any("knn_acc" in r for r in records(tmp_path / "run"))
