"""Sweeps that train (or load) several models and measure each: MAE's mask-ratio sweep (Fig. 5).

A sweep returns a small result dataclass with ``to_dict()``; ``workbench.plots`` draws it and
``workbench.experiments.findings`` judges it.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..checkpoints import load_checkpoint
from ..data import BUILTIN_SETS, fixed_batch
from ..probes import probe_correct
from ..probes.learning import (CRITERION_POOL, CRITERION_TEST, initial_models, paired_gain,
                              passes)
from ..training import IF_ANY, TrainConfig, evaluate
from .pretraining import train


@dataclass
class MaskRatioSweep:
    ratios: list[float]  # training mask ratio of each model, in sweep order
    loss_own_ratio: dict[float, float]  # held-out masked loss at the model's own ratio
    loss_at_075: dict[float, float]  # held-out masked loss at ratio 0.75
    probe_correct: dict[float, list[bool]]  # per probe test image: linear probe right or not
    steps: int  # training steps of each run
    probe_data: str = "shapes"  # the labelled set of the linear probe
    # the control: the same probe on the runs' initialisation (the seed's step-0 model, the same
    # for every ratio); None when the checkpoints came without their runs
    init_correct: list[bool] | None = None

    @property
    def linear_probe(self) -> dict[float, float]:
        """Linear-probe accuracy in [0, 1] (mean-pooled features) per ratio."""
        return {r: float(np.mean(c)) for r, c in self.probe_correct.items()}

    def learning_gains(self) -> dict[float, tuple[float, list[float]]]:
        """Per ratio, the probe's gain over the initialisation and its 95 % paired interval
        (``probes.learning.paired_gain``); {} without the control."""
        if self.init_correct is None:
            return {}
        return {r: paired_gain(np.asarray(c), np.asarray(self.init_correct))
                for r, c in self.probe_correct.items()}

    def untestable_reason(self) -> str | None:
        """Why the sweep's claim cannot be tested here (its runs have not learned, or the
        evidence cannot show it), or None: the learning criterion of ``probes.learning`` for
        every ratio, on at least its number of held-out images."""
        if self.init_correct is None:
            return "no initialisation control: the sweep's checkpoints came without their runs"
        n = len(self.init_correct)
        if n < CRITERION_TEST:
            return (f"the probe has {n} held-out images, the learning criterion needs "
                    f"{CRITERION_TEST}; with {self.steps} training steps per ratio the runs are "
                    f"not shown to have learned")
        failing = {r: g for r, (g, ci) in self.learning_gains().items() if not passes(g, ci)}
        if failing:
            gains = ", ".join(f"{r:g}: {100 * g:+.1f}" for r, g in failing.items())
            return (f"the runs at ratios {sorted(failing)} do not pass the learning criterion "
                    f"after {self.steps} steps (gain over init, points: {gains})")
        return None

    @property
    def loss_curves(self) -> dict[str, list[float]]:
        """{label: [loss per ratio]} for ``plots.mask_ratio_sweep_figure``."""
        return {"loss at own ratio": [self.loss_own_ratio[r] for r in self.ratios],
                "loss at 0.75": [self.loss_at_075[r] for r in self.ratios]}

    @property
    def accuracies(self) -> list[float]:
        """Linear-probe accuracy per ratio, in sweep order."""
        return [self.linear_probe[r] for r in self.ratios]

    @property
    def correct_matrix(self) -> np.ndarray:
        """[ratios, probe images] 0/1, in sweep order: what ``findings.high_mask_ratio_best`` takes."""
        return np.asarray([self.probe_correct[r] for r in self.ratios], dtype=float)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "MaskRatioSweep":
        """The inverse of :meth:`to_dict` (the derived ``linear_probe`` is recomputed)."""
        ratios = [float(r) for r in d["ratios"]]
        per = lambda key: {r: d[key][str(r)] for r in ratios}  # noqa: E731
        return cls(ratios, per("loss_own_ratio"), per("loss_at_075"), per("probe_correct"),
                   int(d["steps"]), d.get("probe_data", "shapes"), d.get("init_correct"))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; the per-ratio numbers are keyed by ``str(ratio)``."""
        def keyed(d):
            return {str(r): v for r, v in d.items()}
        return {"ratios": list(self.ratios), "loss_own_ratio": keyed(self.loss_own_ratio),
                "loss_at_075": keyed(self.loss_at_075), "linear_probe": keyed(self.linear_probe),
                "probe_correct": keyed({r: [bool(x) for x in c]
                                        for r, c in self.probe_correct.items()}),
                "steps": self.steps, "probe_data": self.probe_data,
                "init_correct": None if self.init_correct is None else
                [bool(x) for x in self.init_correct]}


def sweep_run_dir(runs_dir: str | os.PathLike, kind: str, ratio: float, steps: int, batch_size: int,
            seed: int, data: str | os.PathLike = "builtin") -> Path:
    """One folder per setting, so running the sweep again reuses finished runs."""
    name = f"{kind}-r{round(ratio * 100)}-s{steps}-b{batch_size}-seed{seed}"
    if str(data) not in BUILTIN_SETS:
        where = str(Path(data).resolve())
        name += f"-{Path(where).name}-{hashlib.sha1(where.encode()).hexdigest()[:8]}"
    elif str(data) != "builtin":
        name += f"-{data}"
    return Path(runs_dir) / name


def train_at_ratio(ratio: float, steps: int = 150, batch_size: int = 64, kind: str = "mae",
                   preset: str = "tiny", seed: int = 0, runs_dir: str | os.PathLike = "runs/sweep",
                   data: str | os.PathLike = "builtin",
                   model_overrides: Mapping[str, Any] | None = None) -> Path:
    """Train (or resume, so a finished run is reused) the sweep's run at one mask ratio in
    :func:`run_dir`; returns its checkpoint."""
    out = sweep_run_dir(runs_dir, kind, ratio, steps, batch_size, seed, data)
    res = train(TrainConfig(kind=kind, preset=preset, steps=steps, batch_size=batch_size,
                            model_overrides={**(model_overrides or {}), "mask_ratio": ratio},
                            data=str(data), out=str(out), seed=seed, resume=IF_ANY,
                            ckpt_every=0, picture_every=0, progress=False,
                            knn_every=0))  # the sweep probes each run itself; no monitor
    return Path(res.checkpoint)


def sweep_sets(img_size: int, n_probe: int, seed: int, data, probe_data):
    """(held-out images of the training data for the losses, probe train set, probe test set)."""
    return (fixed_batch(data, img_size, n_probe, "heldout", seed)[0],
            fixed_batch(probe_data, img_size, 2 * n_probe, "train", seed),
            fixed_batch(probe_data, img_size, n_probe, "heldout", seed))


def measure_at_ratio(model, ratio: float, sets, seed: int = 0) -> dict[str, Any]:
    """One sweep point: masked loss at the model's ratio and at 0.75 (fixed seeded masks) and the
    linear probe's per-image correctness."""
    heldout, probe_train, probe_test = sets
    return {"loss_own_ratio": evaluate(model, heldout, mask_ratio=ratio, seed=seed),
            "loss_at_075": evaluate(model, heldout, mask_ratio=0.75, seed=seed),
            "probe_correct": probe_correct(model, probe_train, probe_test, CRITERION_POOL,
                                           seed=seed).tolist()}


def mask_ratio_sweep(ratios: Sequence[float], steps: int = 150, batch_size: int = 64,
                     kind: str = "mae", preset: str = "tiny",
                     checkpoints: Mapping[float, str | os.PathLike] | None = None,
                     n_probe: int = 256, seed: int = 0, runs_dir: str | os.PathLike = "runs/sweep",
                     data: str | os.PathLike = "builtin", probe_data: str | os.PathLike = "shapes",
                     model_overrides: Mapping[str, Any] | None = None) -> MaskRatioSweep:
    """Train a short run per mask ratio on ``data`` (or load ``checkpoints[ratio]``), then measure
    each model: masked loss at its own ratio and at 0.75 on ``n_probe`` held-out images of
    ``data``, and a linear probe (C by cross-validation, mean-pooled features) trained on ``2 * n_probe`` training
    images of ``probe_data`` and tested on ``n_probe`` held-out ones (default: the built-in
    shapes, whose labels are semantic).

    Runs go to :func:`run_dir` under ``runs_dir`` and are resumed, so a finished run is reused.
    ``model_overrides`` are extra :class:`~workbench.core.config.ModelConfig` fields for every run.
    """
    models, paths = {}, {}
    for ratio in ratios:
        paths[ratio] = checkpoints[ratio] if checkpoints else train_at_ratio(
            ratio, steps, batch_size, kind, preset, seed, runs_dir, data, model_overrides)
        models[ratio] = load_checkpoint(paths[ratio])
    img_size = next(iter(models.values())).cfg.img_size
    sets = sweep_sets(img_size, n_probe, seed, data, probe_data)
    points = {r: measure_at_ratio(m, r, sets, seed) for r, m in models.items()}
    # every ratio's run starts from the same step-0 model (the seed's; the ratio builds nothing)
    init = initial_models({"sweep": Path(paths[ratios[0]]).parent}).get("sweep at init")
    init_correct = None if init is None else \
        probe_correct(init, sets[1], sets[2], CRITERION_POOL, seed=seed).tolist()
    return MaskRatioSweep(
        ratios=list(models),
        loss_own_ratio={r: p["loss_own_ratio"] for r, p in points.items()},
        loss_at_075={r: p["loss_at_075"] for r, p in points.items()},
        probe_correct={r: p["probe_correct"] for r, p in points.items()},
        steps=steps, probe_data=str(probe_data), init_correct=init_correct)
