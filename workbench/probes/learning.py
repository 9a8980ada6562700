"""Has a pretrained encoder learned anything a probe can see? The learning criterion.

Every claim the workbench makes about what pretraining does is only worth stating about a model
that has learned. The test: a linear probe on the frozen, mean-pooled encoder features of the
built-in shapes (a semantic label colour statistics do not give away), the trained model against
*its own initialisation* (the same config and seed at step 0), paired image by image on the same
held-out images. The criterion (issue 28): the trained model beats its initialisation by at
least :data:`MIN_GAIN` (10 points) with the 95 % interval of the difference above
:data:`MIN_GAIN_LOW` (+5 points), on at least 2048 held-out images. Raw pixels are the second
baseline: a probe that does no better than pixels has learned nothing useful either.

Mean pooling is fixed in advance, not chosen per model: it is the pooling that showed learning in
the first measurements (``shared/DESIGN.md``: cls 32.0 %, mean 36.4 % after 1200 steps) and the
official fine-tuning default (global average pooling); picking the better of two poolings per
model would bias the gain upwards.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import torch

from ..core.results import AsDict
from .linear import linear_predictions, pooled_features

MIN_GAIN = 0.10  # trained − init accuracy the criterion asks for (points / 100)
MIN_GAIN_LOW = 0.05  # ... and the least lower end of its 95 % interval
CRITERION_POOL = "mean"
CRITERION_TRAIN, CRITERION_TEST = 1024, 2048  # probe training / held-out shapes


def passes(gain: float, ci) -> bool:
    """The criterion on a paired gain and its 95 % interval: ``gain >= MIN_GAIN`` and the
    interval's lower end above ``MIN_GAIN_LOW``."""
    return bool(gain >= MIN_GAIN and ci[0] > MIN_GAIN_LOW)


@dataclass
class LearningCheck(AsDict):
    """A trained encoder against its initialisation (and raw pixels) on the same images."""

    trained: float  # held-out accuracy of the probe on the trained encoder's features
    init: float  # ... on the same config at step 0 (the control)
    pixels: float | None  # ... on the raw pixels (None: not measured)
    gain: float  # trained − init (points / 100), mean of the per-image differences
    ci: list[float]  # 95 % interval of ``gain`` (paired t over the test images)
    n_test: int
    n_train: int
    pool: str
    passed: bool  # gain >= MIN_GAIN and ci[0] > MIN_GAIN_LOW
    chance: float
    extra: dict = field(default_factory=dict)  # e.g. the other pooling's accuracies

    def summary(self) -> str:
        pix = "" if self.pixels is None else f", raw pixels {100 * self.pixels:.1f} %"
        verdict = "passes" if self.passed else "FAILS"
        return (f"linear probe ({self.pool} pool, {self.n_test} held-out shapes): trained "
                f"{100 * self.trained:.1f} %, init {100 * self.init:.1f} %{pix}; gain "
                f"{100 * self.gain:+.1f} points [{100 * self.ci[0]:+.1f}, {100 * self.ci[1]:+.1f}]"
                f" -> {verdict} the criterion (>= {100 * MIN_GAIN:.0f} points, interval above "
                f"+{100 * MIN_GAIN_LOW:.0f})")


def paired_gain(trained_correct: np.ndarray, init_correct: np.ndarray, level: float = 0.95
                ) -> tuple[float, list[float]]:
    """Mean and t interval of the per-image differences of two 0/1 correctness vectors on the
    same images (the paired design; with thousands of images the t interval is accurate)."""
    from scipy import stats

    d = np.asarray(trained_correct, dtype=float) - np.asarray(init_correct, dtype=float)
    if d.size < 2:
        raise ValueError(f"a paired gain needs at least 2 images, got {d.size}")
    mean = float(d.mean())
    sd = float(d.std(ddof=1))
    if sd == 0:
        return mean, [mean, mean]
    half = float(stats.t.ppf(0.5 + level / 2, d.size - 1)) * sd / np.sqrt(d.size)
    return mean, [mean - half, mean + half]


def criterion_sets(img_size: int, n_train: int = CRITERION_TRAIN, n_test: int = CRITERION_TEST,
                   seed: int = 0, data: str | os.PathLike = "shapes"):
    """The probe's (train, held-out) labelled images: the same for every model compared."""
    from ..data import fixed_batch

    return (fixed_batch(data, img_size, n_train, "train", seed),
            fixed_batch(data, img_size, n_test, "heldout", seed))


def pool_correct(model, train, test, seed: int = 0) -> dict[str, np.ndarray]:
    """Per held-out image, right or wrong, of a linear probe on each pooling (one forward pass)."""
    (xtr, ytr), (xte, yte) = (pooled_features(model, d) for d in (train, test))
    return {p: linear_predictions(xtr[p], ytr, xte[p], seed=seed) == yte for p in xtr}


def pixel_correct(train, test, seed: int = 0) -> np.ndarray:
    """Per held-out image, right or wrong, of the same linear probe on the raw (normalised)
    pixels: the baseline no encoder is needed for."""
    (xtr, ytr), (xte, yte) = train, test
    flat = lambda x: x.reshape(len(x), -1).float().numpy()  # noqa: E731 - [n, 3*S*S]
    return linear_predictions(flat(xtr), ytr.numpy(), flat(xte), seed=seed) == yte.numpy()


def learning_check(model, init, train=None, test=None, *, pixels: bool = True,
                   pool: str = CRITERION_POOL, seed: int = 0) -> LearningCheck:
    """The criterion for ``model`` against ``init`` (its step-0 self, :func:`initial_model`) on
    ``train`` / ``test`` (default: :func:`criterion_sets`, 1024 / 2048 shapes)."""
    if (train is None) != (test is None):
        raise ValueError("pass both train and test sets, or neither (the criterion's shapes)")
    if train is None:
        train, test = criterion_sets(model.cfg.img_size, seed=seed)
    trained, start = pool_correct(model, train, test, seed), pool_correct(init, train, test, seed)
    if pool not in trained:
        raise ValueError(f"pool must be one of {sorted(trained)}, got {pool!r}")
    gain, ci = paired_gain(trained[pool], start[pool])
    n_classes = int(torch.as_tensor(train[1]).unique().numel())
    other = {f"{p} {which}": float(c[p].mean()) for p in trained if p != pool
             for which, c in (("trained", trained), ("init", start))}
    return LearningCheck(
        trained=float(trained[pool].mean()), init=float(start[pool].mean()),
        pixels=float(pixel_correct(train, test, seed).mean()) if pixels else None,
        gain=gain, ci=ci, n_test=len(test[1]), n_train=len(train[1]), pool=pool,
        passed=passes(gain, ci), chance=1 / n_classes,
        extra=other)


def initial_model(run_dir: str | os.PathLike):
    """The step-0 model of a training run: its ``init.safetensors``, or -- for a run without one
    (older runs, shipped runs) -- rebuilt from its ``config.json`` and seed exactly as training
    builds it (the global generators are left as they were)."""
    from ..checkpoints import load_checkpoint
    from ..core.config import ModelConfig
    from ..core.io import run_files
    from ..models import model_from_config

    files = run_files(run_dir)
    if files.init.exists():
        return load_checkpoint(files.init)
    if not files.config.exists():
        raise FileNotFoundError(f"{files.root} has neither init.safetensors nor config.json: "
                                f"not a training run directory, so its initialisation is unknown")
    model, train = files.read_settings()
    cfg, seed = ModelConfig.from_dict(model), int(train["seed"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # what training's seed_everything does before building
        model = model_from_config(cfg)
    return model.eval()


def initial_models(run_dirs: Mapping[str, str | os.PathLike]) -> dict[str, object]:
    """The controls of a comparison: ``{"<name> at init": step-0 model}`` for each named run
    directory that has one (:func:`initial_model`); a folder that is not a training run (an
    external checkpoint's) is skipped with a warning naming it."""
    import warnings

    found = {}
    for name, folder in run_dirs.items():
        try:
            found[f"{name} at init"] = initial_model(folder)
        except FileNotFoundError as e:
            warnings.warn(f"no initialisation control for {name}: {e}")
    return found
