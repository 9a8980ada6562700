"""The supervised fusion comparison (MFF finding 4)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from workbench.experiments import findings
from workbench.probes.fusion import FusionHistory
from workbench.experiments.supervised import SupervisedFusionConfig, train_supervised_fusion
from workbench.training.supervised import FusionClassifier
from workbench.core.config import model_config

SMALL = dict(img_size=16, patch_size=4, embed_dim=32, depth=3, num_heads=2)


def test_classifier_reads_the_fused_tokens():
    model = FusionClassifier(model_config("mff", "tiny", **SMALL), num_classes=5)
    imgs = torch.randn(4, 3, 16, 16)
    logits = model(imgs)
    assert logits.shape == (4, 5)
    logits.sum().backward()  # the head's loss reaches the fusion logits and every fused block
    assert model.backbone.fusion.logits.grad.abs().sum() > 0
    assert model.backbone.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert model.backbone.decoder_blocks[0].attn.qkv.weight.grad is None  # decoder unused


def test_supervised_run_logs_weights_and_learns_the_labels():
    cfg = SupervisedFusionConfig(model_overrides=SMALL, data="builtin", steps=12, batch_size=16,
                                 lr=3e-3, warmup=2, log_every=4, progress=False)
    r = train_supervised_fusion(cfg)
    assert r.num_classes == 15  # the built-in photos
    assert r.history.steps.tolist() == [0, 4, 8, 12]
    w = r.history.weights
    assert w.shape == (4, len(r.history.layers))
    assert torch.allclose(w.sum(1), torch.ones(4, dtype=w.dtype), atol=1e-6)
    assert torch.allclose(w[0], torch.full_like(w[0], 1 / w.shape[1]))  # logits start equal
    assert not torch.allclose(w[-1], w[0])  # and were trained
    # learnt something: held-out accuracy above twice chance (1/15), training cross-entropy below
    # that of a uniform guess (log 15)
    assert r.heldout_accuracy > 2 / 15 and r.train_loss < np.log(15)
    # same seed, same run; the caller's generator is left where it was
    torch.manual_seed(7)
    expected = torch.rand(2)
    torch.manual_seed(7)
    again = train_supervised_fusion(cfg)
    assert torch.equal(torch.rand(2), expected)
    assert torch.allclose(again.history.weights, w)
    assert json.loads(json.dumps(r.to_dict()))["heldout_accuracy"] == r.heldout_accuracy


def test_one_class_is_refused(tmp_path):
    (tmp_path / "only").mkdir()
    for i in range(3):
        Image.fromarray(np.full((20, 20, 3), 40 * i, np.uint8)).save(tmp_path / "only" / f"{i}.png")
    with pytest.raises(ValueError, match="at least 2 classes"):
        train_supervised_fusion(SupervisedFusionConfig(model_overrides=SMALL, data=str(tmp_path),
                                                       steps=1, progress=False))


def test_supervised_claim_reads_the_last_layer():
    layers = [0, 2, 5]
    last_wins = FusionHistory(torch.tensor([0, 10]), torch.tensor([[1 / 3] * 3, [0.2, 0.3, 0.5]]),
                              layers)
    shallow_wins = FusionHistory(torch.tensor([0, 10]),
                                 torch.tensor([[1 / 3] * 3, [0.5, 0.3, 0.2]]), layers)
    def seeds(h, n=3):  # the same run, a little different per seed
        return [FusionHistory(h.steps, h.weights + 0.01 * i * torch.tensor([-1.0, 0.0, 1.0]),
                              layers) for i in range(n)]
    assert findings.supervised_fusion_favors_last(seeds(last_wins)).verdict == "held"
    assert findings.supervised_fusion_favors_last(seeds(shallow_wins)).verdict == "not held"
    assert findings.supervised_fusion_favors_last(last_wins).verdict == "inconclusive"  # 1 seed


def test_matching_copies_the_pretraining_run():
    from workbench.training import TrainConfig

    run = TrainConfig(kind="mff", preset="tiny", seed=3, model_overrides={"depth": 4,
                                                                         "mask_ratio": 0.6})
    cfg = SupervisedFusionConfig.matching(run, batch_size=16)
    # the tiny preset's 300 steps, peak lr 4e-3 * 64 / 256, 5 % warmup; the batch overridden
    assert (cfg.steps, cfg.lr, cfg.warmup, cfg.seed, cfg.batch_size) == (300, 1e-3, 15, 3, 16)
    assert cfg.model_overrides == {"depth": 4} and cfg.data == "shapes"
    assert SupervisedFusionConfig.matching(TrainConfig(lr=5e-4, steps=40)).lr == 5e-4


def test_supervised_is_an_objective_of_the_one_loop(tmp_path):
    """A kept run directory: the fusion weights in metrics.jsonl, a checkpoint, and a resumed run
    that ends where an uncut one does."""
    from workbench.checkpoints import read_checkpoint
    from workbench.probes import fusion_history
    from workbench.training import TrainConfig, run_training

    cfg = SupervisedFusionConfig(model_overrides=SMALL, data="builtin", steps=6, batch_size=8,
                                 lr=3e-3, warmup=2, log_every=2, progress=False,
                                 out=str(tmp_path / "kept"))
    r = train_supervised_fusion(cfg)
    assert fusion_history(tmp_path / "kept").steps.tolist() == [0, 2, 4, 6] == \
        r.history.steps.tolist()
    run = cfg.train_config(str(tmp_path / "cut"))
    run_training(TrainConfig(**{**run.to_dict(), "stop_after": 3, "resume": False}))
    resumed = run_training(run)  # resume=True: continues the cut run to the end
    assert resumed.heldout_accuracy == r.heldout_accuracy and resumed.step == 6
    a, b = (read_checkpoint(tmp_path / d / "checkpoint.pt")["model"] for d in ("kept", "cut"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="kind must be 'mff'"):
        run_training(TrainConfig(kind="mae", objective="supervised", out=str(tmp_path / "x")))
