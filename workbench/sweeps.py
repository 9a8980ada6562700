"""Sweeps that train (or load) several models and measure each: MAE's mask-ratio sweep (Fig. 5).

A sweep returns a small result dataclass with ``to_dict()``; ``workbench.plots`` draws it and
``workbench.findings`` judges it.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from .checkpoints import load_checkpoint
from .data import fixed_batch
from .probes import linear_probe
from .training import TrainConfig, evaluate, train


@dataclass
class MaskRatioSweep:
    ratios: list[float]  # training mask ratio of each model, in sweep order
    loss_own_ratio: dict[float, float]  # held-out masked loss at the model's own ratio
    loss_at_075: dict[float, float]  # held-out masked loss at ratio 0.75
    linear_probe: dict[float, float]  # linear-probe accuracy in [0, 1] (cls token)
    steps: int  # training steps of each run

    @property
    def loss_curves(self) -> dict[str, list[float]]:
        """{label: [loss per ratio]} for ``plots.mask_ratio_sweep_figure``."""
        return {"loss at own ratio": [self.loss_own_ratio[r] for r in self.ratios],
                "loss at 0.75": [self.loss_at_075[r] for r in self.ratios]}

    @property
    def accuracies(self) -> list[float]:
        """Linear-probe accuracy per ratio, in sweep order."""
        return [self.linear_probe[r] for r in self.ratios]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; the per-ratio numbers are keyed by ``str(ratio)``."""
        def keyed(d):
            return {str(r): float(v) for r, v in d.items()}
        return {"ratios": list(self.ratios), "loss_own_ratio": keyed(self.loss_own_ratio),
                "loss_at_075": keyed(self.loss_at_075), "linear_probe": keyed(self.linear_probe),
                "steps": self.steps}


def run_dir(runs_dir: str | os.PathLike, kind: str, ratio: float, steps: int, batch_size: int,
            seed: int, data: str | os.PathLike = "builtin") -> Path:
    """One folder per setting, so running the sweep again reuses finished runs."""
    name = f"{kind}-r{round(ratio * 100)}-s{steps}-b{batch_size}-seed{seed}"
    if str(data) != "builtin":
        where = str(Path(data).resolve())
        name += f"-{Path(where).name}-{hashlib.sha1(where.encode()).hexdigest()[:8]}"
    return Path(runs_dir) / name


def mask_ratio_sweep(ratios: Sequence[float], steps: int = 150, batch_size: int = 64,
                     kind: str = "mae", preset: str = "tiny",
                     checkpoints: Mapping[float, str | os.PathLike] | None = None,
                     n_probe: int = 256, seed: int = 0, runs_dir: str | os.PathLike = "runs/sweep",
                     data: str | os.PathLike = "builtin",
                     model_overrides: Mapping[str, Any] | None = None) -> MaskRatioSweep:
    """Train a short run per mask ratio (or load ``checkpoints[ratio]``), then measure each model
    on ``n_probe`` held-out images of ``data``: masked loss at its own ratio and at 0.75 (fixed
    seeded masks) and a linear probe trained on ``n_probe`` training images (the data's labels;
    built-in photos: which photo a crop comes from).

    Runs go to :func:`run_dir` under ``runs_dir`` and are resumed, so a finished run is reused.
    ``model_overrides`` are extra :class:`~workbench.config.ModelConfig` fields for every run.
    """
    models = {}
    for ratio in ratios:
        if checkpoints:
            models[ratio] = load_checkpoint(checkpoints[ratio])
            continue
        out = run_dir(runs_dir, kind, ratio, steps, batch_size, seed, data)
        res = train(TrainConfig(kind=kind, preset=preset, steps=steps, batch_size=batch_size,
                                model_overrides={**(model_overrides or {}), "mask_ratio": ratio},
                                data=str(data), out=str(out), seed=seed, resume=True,
                                ckpt_every=0, snapshot_every=0, progress=False))
        models[ratio] = load_checkpoint(res.checkpoint)
    img_size = next(iter(models.values())).cfg.img_size
    test = fixed_batch(data, img_size, n_probe, "heldout", seed)
    probe_train = fixed_batch(data, img_size, n_probe, "train", seed)
    return MaskRatioSweep(
        ratios=list(models),
        loss_own_ratio={r: evaluate(m, test[0], mask_ratio=r, seed=seed) for r, m in models.items()},
        loss_at_075={r: evaluate(m, test[0], mask_ratio=0.75, seed=seed) for r, m in models.items()},
        linear_probe={r: linear_probe(m, probe_train, test) for r, m in models.items()},
        steps=steps)
