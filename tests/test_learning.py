"""The learning criterion: a run's initialisation kept and rebuilt exactly, the paired gain
against scipy, and the criterion on encoders whose features do and do not carry the label."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from workbench.checkpoints import CheckpointError, load_checkpoint, save_weights
from workbench.core.config import ModelConfig
from workbench.models import model_from_config
from workbench.probes.learning import (MIN_GAIN, initial_model, learning_check, paired_gain,
                                       pixel_correct)
from workbench import TrainConfig, train

SMALL = dict(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2,
             decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)


def small_run(out: Path, kind: str = "mae", **kw) -> TrainConfig:
    base = dict(kind=kind, model_overrides=dict(SMALL), steps=3, batch_size=8, base_lr=1e-2,
                warmup=1, log_every=10, ckpt_every=0, picture_every=0, eval_images=8,
                progress=False, knn_every=0, seed=5, out=str(out))
    return TrainConfig(**{**base, **kw})


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("kind", ["mae", "mff"])
def test_a_run_keeps_its_initialisation_and_it_is_rebuilt_exactly(tmp_path, kind):
    out = tmp_path / kind
    train(small_run(out, kind))
    kept = initial_model(out)  # init.safetensors
    final = load_checkpoint(out)
    assert kept.checkpoint_info.step == 0 and not same_weights(kept, final)  # training moved it
    (out / "init.safetensors").unlink()
    assert same_weights(initial_model(out), kept)  # rebuilt from config.json and the seed
    before = torch.get_rng_state()
    initial_model(out)
    assert torch.equal(torch.get_rng_state(), before)  # the global generator is untouched
    # a resumed run does not rewrite its initialisation
    save_weights(final, out / "init.safetensors", step=0)
    train(small_run(out, kind, steps=4, resume=True))
    assert same_weights(load_checkpoint(out / "init.safetensors"), final)


def test_initial_model_of_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither init.safetensors nor config.json"):
        initial_model(tmp_path)


def test_save_weights_round_trips_exactly_and_names_a_damaged_file(tmp_path):
    model = model_from_config(ModelConfig(kind="mff", **SMALL))
    save_weights(model, tmp_path / "w.safetensors", step=7)
    back = load_checkpoint(tmp_path / "w.safetensors")
    assert same_weights(model, back) and back.cfg == model.cfg
    assert back.checkpoint_info.layout == "workbench" and back.checkpoint_info.step == 7
    # a run folder holding only model.safetensors (a shipped run) loads through its folder
    (tmp_path / "run").mkdir()
    (tmp_path / "w.safetensors").rename(tmp_path / "run" / "model.safetensors")
    assert same_weights(load_checkpoint(tmp_path / "run"), model)
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "bad.safetensors"),
              metadata={"format": "mim-workbench"})
    with pytest.raises(CheckpointError, match="metadata is incomplete"):
        load_checkpoint(tmp_path / "bad.safetensors")


def test_paired_gain_is_the_paired_t_interval():
    from scipy import stats

    rng = np.random.default_rng(0)
    a, b = rng.random(500) < 0.6, rng.random(500) < 0.4
    gain, ci = paired_gain(a, b)
    ref = stats.ttest_rel(a.astype(float), b.astype(float)).confidence_interval(0.95)
    assert gain == pytest.approx(a.mean() - b.mean())
    assert ci == pytest.approx([ref.low, ref.high])
    assert paired_gain(a, a) == (0.0, [0.0, 0.0])


class LabelEncoder(torch.nn.Module):
    """An 'encoder' whose tokens are the image's pixels (the label is written into them) plus
    noise of a given size: noise 0 separates the classes, a large noise hides them."""

    def __init__(self, noise: float, img_size: int = 16):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.noise, self.cfg = noise, ModelConfig(**SMALL)

    def encode(self, imgs, mask_ratio=0.0):
        g = torch.Generator().manual_seed(int(imgs.sum().item() * 1000) % 2**31)
        x = imgs[:, 0, :8, 0]  # [B, 8]: the label's one-hot lives in the first 8 rows
        x = x + self.noise * torch.randn(x.shape, generator=g)
        return torch.stack([x, x], dim=1)  # [B, 1 + 1 token, 8]


def labelled(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 8
    imgs = torch.randn(n, 3, 16, 16, generator=g) * 0.1
    imgs[:, 0, :8, :] += 3 * torch.nn.functional.one_hot(y, 8).float()[:, :, None]  # 8 rows
    return imgs, y


def test_the_criterion_passes_an_encoder_that_carries_the_label_and_fails_one_that_does_not():
    train_set, test_set = labelled(256, 0), labelled(512, 1)
    good = learning_check(LabelEncoder(0.0), LabelEncoder(30.0), train_set, test_set)
    assert good.trained > 0.95 and good.init < 0.3 and good.passed
    assert good.gain == pytest.approx(good.trained - good.init)
    assert good.ci[0] > MIN_GAIN and good.n_test == 512 and good.chance == 1 / 8
    assert good.pixels > 0.5  # the label is in the pixels: the baseline sees it too (chance 1/8)
    same = learning_check(LabelEncoder(30.0), LabelEncoder(30.0), train_set, test_set,
                          pixels=False)
    assert same.gain == 0 and not same.passed and same.pixels is None
    assert "FAILS" in same.summary() and "passes" in good.summary()
    with pytest.raises(ValueError, match="both train and test"):
        learning_check(LabelEncoder(0.0), LabelEncoder(0.0), train_set)


def test_pixel_baseline_is_a_probe_on_the_flattened_images():
    train_set, test_set = labelled(128, 2), labelled(64, 3)
    correct = pixel_correct(train_set, test_set)
    assert correct.shape == (64,) and correct.mean() > 0.5


@pytest.mark.parametrize("steps, warmup", [(300, 0.05), (600, 30), (7, 0)])
def test_lr_sum_is_the_schedules_closed_form(steps, warmup):
    """Σ lr of a linear warmup over W steps then half a cosine to 0 by step N: the warmup gives
    peak (W + 1) / 2 (nothing when W = 0), the cosine's M = N - W steps peak (M + 1) / 2 (their
    cosines sum to 1). The tiny 300-step schedule: about 0.15, the bound shared/DESIGN.md
    quotes."""
    from workbench.training.schedule import lr_sum, peak_lr, warmup_steps
    from workbench.training.settings import resolve

    cfg = resolve(TrainConfig(steps=steps, warmup=warmup))
    w = warmup_steps(cfg)
    closed = peak_lr(cfg) * ((w + 1) / 2 if w else 0) + peak_lr(cfg) * (steps - w + 1) / 2
    assert lr_sum(cfg) == pytest.approx(closed, rel=1e-12)
    if steps == 300:
        assert lr_sum(cfg) == pytest.approx(0.151)
