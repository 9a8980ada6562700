"""MIM Workbench: train MAE and MFF-MAE and look inside them."""
from __future__ import annotations

from .config import PRESETS, ModelConfig, model_config
from .models import build_model

__version__ = "0.1.0"
__all__ = ["build_model", "model_config", "ModelConfig", "PRESETS", "__version__"]
