"""Linear and kNN probes on frozen features."""
from __future__ import annotations

import pytest
import torch

from workbench import build_model
from workbench.checkpoints import load_checkpoint
import numpy as np

from workbench.probes import (extract_features, knn_probe, linear_probe, probe_correct,
                             probe_results, probe_scores)

SMALL = dict(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2,
             decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)
COLOURS = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])


def coloured(n: int, seed: int):
    """Images whose class is their colour (plus strong noise), ImageNet-normalised."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=g)
    imgs = COLOURS[labels].view(n, 3, 1, 1) * 0.6 + 0.2 + 0.3 * torch.rand(n, 3, 16, 16,
                                                                          generator=g)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (imgs - mean) / std, labels


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("mae", **SMALL)


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_separable_classes_are_found(model, pool):
    train, test = coloured(160, 0), coloured(80, 1)
    assert linear_probe(model, train, test, pool=pool) > 0.9
    assert knn_probe(model, train, test, k=5, pool=pool) > 0.9


def test_probe_scores_are_the_notebook_comparison(model):
    train, test = coloured(64, 0), coloured(32, 1)
    model.train()
    scores = probe_scores(model, train, test)
    assert model.training  # mode restored
    assert scores == {"linear cls": linear_probe(model, train, test, pool="cls"),
                      "linear mean": linear_probe(model, train, test, pool="mean"),
                      "kNN cls": knn_probe(model, train, test, pool="cls")}


def test_probe_results_are_each_probe_on_its_own(model):
    """One forward pass for every probe gives the per-image answers of each probe run alone."""
    train, test = coloured(64, 0), coloured(32, 1)
    results = probe_results(model, train, test, seed=3)
    assert set(results) == {"linear cls", "linear mean", "kNN cls"}
    assert np.array_equal(results["linear cls"], probe_correct(model, train, test, seed=3))
    assert np.array_equal(results["linear mean"],
                          probe_correct(model, train, test, pool="mean", seed=3))
    assert results["kNN cls"].mean() == knn_probe(model, train, test, pool="cls")
    assert all(r.shape == (32,) and r.dtype == bool for r in results.values())


def test_random_labels_are_at_chance(model):
    g = torch.Generator().manual_seed(3)
    imgs = torch.randn(400, 3, 16, 16, generator=g)
    labels = torch.randint(0, 4, (400,), generator=g)
    train, test = (imgs[:200], labels[:200]), (imgs[200:], labels[200:])
    assert linear_probe(model, train, test) < 0.4  # chance: 0.25
    assert knn_probe(model, train, test, k=10) < 0.4


def test_batches_equal_one_pair_and_features(model):
    train, test = coloured(64, 0), coloured(32, 1)
    batches = [(train[0][i:i + 16], train[1][i:i + 16]) for i in range(0, 64, 16)]
    assert linear_probe(model, batches, test) == linear_probe(model, train, test)
    x, y = extract_features(model, train, pool="mean", batch_size=10)
    with torch.no_grad():
        ref = model.eval().encode(train[0])[:, 1:].mean(1)
    assert x.shape == (64, 32) and (y == train[1].numpy()).all()
    assert torch.allclose(torch.from_numpy(x), ref, atol=1e-5)
    with pytest.raises(ValueError, match="pool"):
        linear_probe(model, train, test, pool="max")
    with pytest.raises(ValueError, match="labels"):
        knn_probe(model, (train[0], train[1][:10]), test)


def test_official_and_timm_checkpoints(tmp_path, model):
    torch.save({"model": model.state_dict()}, tmp_path / "mae_pretrain.pth")
    loaded = load_checkpoint(tmp_path / "mae_pretrain.pth", num_heads=2, decoder_num_heads=2)
    train, test = coloured(64, 0), coloured(32, 1)
    assert knn_probe(loaded, train, test, k=3) == knn_probe(model, train, test, k=3)
