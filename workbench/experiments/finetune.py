"""Fine-tuning a pretrained checkpoint into a classifier: MAE's ``main_finetune.py`` recipe run by
the one training loop (``TrainConfig(objective="finetune")``, :mod:`workbench.training.finetune`).

:func:`finetune_config` reads the checkpoint's encoder settings (any layout ``load_checkpoint``
reads; a file without an encoder is refused here, before anything is written) and starts from
the recipe's defaults; :func:`finetune` trains it and then writes ``model.safetensors``: the
classifier in timm's key names (``workbench.load_classifier`` or ``timm.create_model`` read it).
"""
from __future__ import annotations

import os
from typing import Any

from ..checkpoints import load_classifier, read_checkpoint, save_classifier
from ..core.config import PRESETS, ModelConfig
from ..core.io import run_files
from ..training import TrainConfig, TrainResult, run_training
from ..training.finetune import open_encoder
from ..training.settings import FINETUNE_RECIPE


def matching_preset(mcfg: ModelConfig) -> str:
    """The preset with the encoder's dimensions (whose fine-tuning defaults the run takes);
    "vit-b" (the paper's recipe) for any other."""
    dims = ("img_size", "patch_size", "embed_dim", "depth", "num_heads")
    for name, preset in PRESETS.items():
        if all(preset.get(k) == getattr(mcfg, k) for k in dims):
            return name
    return "vit-b"


def finetune_config(checkpoint: str | os.PathLike, **fields: Any) -> TrainConfig:
    """The fine-tuning run of ``checkpoint``: its encoder's settings (all of them, as model
    overrides), MAE's recipe (:data:`FINETUNE_RECIPE` and the preset's fine-tuning defaults),
    then ``fields`` (any :class:`TrainConfig` field; ``model_overrides`` are added)."""
    mcfg = open_encoder(str(checkpoint)).cfg
    model = {k: v for k, v in mcfg.to_dict().items() if k != "kind"}
    model.update(fields.pop("model_overrides", {}) or {})
    return TrainConfig(**{**FINETUNE_RECIPE, "kind": mcfg.kind, "preset": matching_preset(mcfg),
                          "objective": "finetune", "pretrained": str(checkpoint),
                          "out": f"runs/finetune-{mcfg.kind}", **fields}, model_overrides=model)


def finetune(cfg: TrainConfig) -> TrainResult:
    """Fine-tune as ``cfg`` says (the one loop: checkpoints, resume, SIGTERM, DDP), then write
    the run's ``model.safetensors`` (rank 0): the classifier of its last checkpoint, in timm's
    key names, with the class names and step in its metadata."""
    result = run_training(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        export_classifier(result.out)
    return result


def export_classifier(out: str | os.PathLike) -> str:
    """``model.safetensors`` of run directory ``out`` from its ``checkpoint.pt``."""
    files = run_files(out)
    ck = read_checkpoint(files.checkpoint, map_location="cpu", mmap=True)
    model = load_classifier(files.checkpoint)
    save_classifier(model, files.weights, step=ck.get("step"),
                    pretrained=(ck.get("train_config") or {}).get("pretrained"))
    return str(files.weights)
