"""Pretraining with the standard measurements: :func:`train`, the loop of
:func:`workbench.training.run_training` with the feature monitor of ``probes.monitor`` (logged as
``knn_acc`` / ``probe_acc``) and the reconstruction pictures of ``probes.reconstruction``.

This is what ``workbench.train``, ``python -m workbench train``, the sweeps and the shipped runs
use. The training layer does not import the probes: the measurements come in here, one layer up,
as :class:`workbench.training.TrainHooks`.
"""
from __future__ import annotations

from ..core.config import ModelConfig
from ..probes.monitor import build_monitor
from ..probes.reconstruction import training_picture
from ..training import TrainConfig, TrainHooks, TrainResult, run_training
from ..training.hooks import Measure


def feature_monitor(cfg: TrainConfig, mcfg: ModelConfig) -> Measure | None:
    """The run's feature monitor (:func:`workbench.probes.monitor.build_monitor` on its
    ``knn_data`` / ``knn_images``): its ``measure``, or None (with a warning) when the labelled
    images cannot serve."""
    monitor = build_monitor(cfg.data, cfg.knn_data, mcfg.img_size, cfg.knn_images)
    return monitor.measure if monitor is not None else None


STANDARD_HOOKS = TrainHooks(monitor=feature_monitor, picture=training_picture)


def train(cfg: TrainConfig) -> TrainResult:
    """Train (or resume) a model as ``cfg`` says, with the standard measurements
    (:data:`STANDARD_HOOKS`): rank 0 writes ``cfg.out`` -- ``config.json``, ``metrics.jsonl``
    (with ``knn_acc`` / ``probe_acc`` every ``knn_every`` steps), checkpoints, pictures
    (PNGs) and, with ``snapshot_steps``, weight snapshots.
    Single process or under torchrun (DDP); see :func:`workbench.training.run_training`."""
    return run_training(cfg, STANDARD_HOOKS)
