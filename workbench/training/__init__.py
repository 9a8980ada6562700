"""Training MAE and MFF-MAE: settings and schedule, distributed set-up and stop requests, one
training step, and one loop.

* :mod:`.settings` -- :class:`TrainConfig` (per-preset defaults, checks), :class:`TrainResult`
* :mod:`.schedule` -- warmup + cosine learning rate, AdamW parameter groups
* :mod:`.distributed` -- ranks, device, SIGINT / SIGTERM stop requests
* :mod:`.step` -- :func:`build_train_state` and :func:`train_step` (what benchmarks time)
* :mod:`.supervised` -- the supervised objective's model (:class:`FusionClassifier`) and loss
* :mod:`.finetune` -- the fine-tuning objective: layer-decay groups, mixup loss, top-1 / top-5
* :mod:`.evaluation` -- the final held-out measurement
* :mod:`.hooks` -- :class:`TrainHooks`: what a run measures besides its loss, given by the caller
* :mod:`.run_dir` -- claiming, resuming and writing a run directory
* :mod:`.loop` -- :func:`run_training` (``workbench.train`` is it with the standard hooks)

The global generator state a run checkpoints and gives back is ``workbench.core.seeds``'.
"""
from __future__ import annotations

from ..core.exports import lazy_exports

# each name's module; imported on first use, so the settings (TrainConfig) load without torch
_WHERE = {
    "OutputError": "..core.io",
    "Dist": ".distributed", "StopRequest": ".distributed", "setup_distributed": ".distributed",
    "evaluate": ".evaluation", "final_evaluation": ".evaluation",
    "Measure": ".hooks", "NO_HOOKS": ".hooks", "TrainHooks": ".hooks",
    "run_training": ".loop",
    "group_names": ".schedule", "lr_at": ".schedule", "param_groups": ".schedule",
    "peak_lr": ".schedule", "warmup_cosine": ".schedule", "warmup_steps": ".schedule",
    "IF_ANY": ".settings", "OBJECTIVES": ".settings", "PAPER_RECIPE": ".settings",
    "PRESET_TRAIN_DEFAULTS": ".settings",
    "TrainConfig": ".settings", "TrainResult": ".settings", "resolve": ".settings",
    "TrainingDiverged": ".step", "TrainState": ".step", "build_train_state": ".step",
    "pick_precision": ".step", "train_step": ".step",
    "FusionClassifier": ".supervised",
    "FinetuneLoss": ".finetune", "StepTargets": ".finetune", "layer_decay_groups": ".finetune",
    "topk_evaluation": ".finetune", "top1_correct": ".finetune", "FINETUNE_RECIPE": ".settings",
}
__getattr__ = lazy_exports(__name__, _WHERE)
__all__ = list(_WHERE)
