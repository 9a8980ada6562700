"""Per-layer probes: separable layers reach 100 %, label-shuffled ones chance, and one forward
pass gives every block's cls and mean-pooled features."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench import build_model
from workbench.data import fixed_batch
from workbench.probes.cka import layer_features
from workbench.probes.layers import block_features, layer_correct, layer_probes


def synthetic_layers(n: int, classes: int, seed: int):
    """Three 'layers' of one set of labels: noise, well separated class means (the same for
    every ``seed``), and noise."""
    means = np.random.default_rng(0).normal(size=(classes, 16)) * 10
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    separable = means[y] + rng.normal(size=(n, 16)) * 0.1
    return [rng.normal(size=(n, 16)), separable, rng.normal(size=(n, 16))], y


@pytest.mark.parametrize("classifier", ["linear", "kNN"])
def test_separable_layer_is_perfect_and_noise_is_chance(classifier):
    train, ytr = synthetic_layers(400, 8, 1)
    test, yte = synthetic_layers(400, 8, 2)  # new images and noise, the same class means
    rng = np.random.default_rng(3)
    acc = layer_correct(train, ytr, test, yte, classifier).mean(axis=1)
    assert acc[1] == 1.0
    # labels shuffled apart from the features (training and test): chance, 1/8 within ~3 SD
    chance = layer_correct(train[1:2], rng.permutation(ytr), test[1:2], rng.permutation(yte),
                           classifier).mean()
    assert abs(chance - 1 / 8) < 3 * np.sqrt(1 / 8 * 7 / 8 / 400)
    assert acc[0] < 0.3 and acc[2] < 0.3


def test_layer_probes_on_a_model_and_errors():
    model = build_model("mff", "tiny", depth=3, fuse_layers=[0, 2])
    train = fixed_batch("shapes", 32, 48, "train", 0)
    test = fixed_batch("shapes", 32, 24, "heldout", 0)
    state = torch.get_rng_state()
    feats = block_features(model, train[0], batch_size=20)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's generator is untouched
    assert [f.shape for f in feats["cls"]] == [torch.Size([48, 192])] * 3
    for pool in ("cls", "mean"):  # minibatches give what one pass gives; cka reads the same
        whole = layer_features(model, train[0], batch_size=48, pool=pool)
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(feats[pool], whole))
    res = layer_probes(model, train, test)
    assert res.layers == [0, 1, 2] and res.n_test == 24 and res.n_train == 48
    assert set(res.correct) == {"linear cls", "linear mean", "kNN cls", "kNN mean"}
    for probe, acc in res.accuracy.items():
        assert acc.shape == (3,) and res.best_layer(probe) == int(np.argmax(acc))
    assert res.to_dict()["n_classes"] == 8
    with pytest.raises(ValueError, match="pools"):
        block_features(model, train[0], pools=("max",))
    with pytest.raises(ValueError, match="classifier"):
        layer_correct([np.zeros((4, 2))], [0, 1, 0, 1], [np.zeros((4, 2))], [0, 1, 0, 1], "svm")
