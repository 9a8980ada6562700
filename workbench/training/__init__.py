"""Training MAE and MFF-MAE: settings and schedule, distributed set-up and stop requests, one
training step, and one loop.

* :mod:`.settings` -- :class:`TrainConfig` (per-preset defaults, checks), :class:`TrainResult`
* :mod:`.schedule` -- warmup + cosine learning rate, AdamW parameter groups
* :mod:`.distributed` -- ranks, device, SIGINT / SIGTERM stop requests
* :mod:`.rng` -- global generator state (checkpointed; the caller's is given back)
* :mod:`.step` -- :func:`build_train_state` and :func:`train_step` (what benchmarks time)
* :mod:`.evaluation` -- held-out loss and reconstruction snapshots
* :mod:`.run_dir` -- claiming, resuming and writing a run directory
* :mod:`.loop` -- :func:`train`
"""
from __future__ import annotations

from ..io import OutputError
from .distributed import Dist, StopRequest, setup_distributed
from .evaluation import evaluate, snapshot_picture
from .loop import train
from .schedule import group_names, lr_at, param_groups, peak_lr, warmup_cosine, warmup_steps
from .settings import PAPER_RECIPE, PRESET_TRAIN_DEFAULTS, TrainConfig, TrainResult, resolve
from .step import (TrainingDiverged, TrainState, build_train_state, masks_for, pick_precision,
                   train_step)

__all__ = ["TrainConfig", "TrainResult", "train", "train_step", "build_train_state", "TrainState",
           "TrainingDiverged", "OutputError", "resolve", "lr_at", "peak_lr", "warmup_steps",
           "warmup_cosine", "param_groups", "group_names", "evaluate", "snapshot_picture",
           "masks_for", "pick_precision", "Dist", "StopRequest", "setup_distributed",
           "PRESET_TRAIN_DEFAULTS", "PAPER_RECIPE"]
