"""MIM Workbench: train MAE and MFF-MAE and look inside them.

The common entry points import from here (``from workbench import build_model, load_checkpoint,
export_hf, reconstruct, train, TrainConfig``); each loads its module, and torch, on first use.
"""
from __future__ import annotations

from .core.config import PRESETS, ModelConfig, model_config
from .core.exports import lazy_exports

__version__ = "0.1.0"

_WHERE = {
    "build_model": ".models",
    "load_checkpoint": ".checkpoints",
    "load_models": ".checkpoints",
    "export_timm": ".checkpoints",
    "load_classifier": ".checkpoints",
    "finetune": ".experiments.finetune",
    "export_hf": ".checkpoints.hf",
    "reconstruct": ".probes",
    "train": ".experiments.pretraining",
    "TrainConfig": ".training",
}
__getattr__ = lazy_exports(__name__, _WHERE)
__all__ = ["model_config", "ModelConfig", "PRESETS", "__version__", *_WHERE]
