"""The optimisation recipe: the learning-rate schedule and AdamW's parameter groups."""
from __future__ import annotations

import math

import torch.nn as nn

from .settings import TrainConfig


def warmup_cosine(step: int, peak: float, warmup: int, total: int, floor: float = 0.0) -> float:
    """Learning rate of (0-based) step ``step``: linear warmup to ``peak`` over ``warmup`` steps,
    then half a cosine down to ``floor`` at step ``total`` (and ``floor`` after it)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))


def peak_lr(cfg: TrainConfig) -> float:
    """The linear scaling rule: ``base_lr * batch_size / 256`` (unless ``lr`` is given)."""
    return cfg.lr if cfg.lr is not None else cfg.base_lr * cfg.batch_size / 256


def warmup_steps(cfg: TrainConfig) -> int:
    return int(round(cfg.warmup * cfg.steps)) if cfg.warmup < 1 else int(cfg.warmup)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of optimizer step ``step`` of a run: :func:`warmup_cosine` with the run's
    peak, warmup, length and ``min_lr``."""
    return warmup_cosine(step, peak_lr(cfg), warmup_steps(cfg), cfg.steps, cfg.min_lr)


def lr_sum(cfg: TrainConfig) -> float:
    """Σ lr over the run's steps: with AdamW a parameter moves by at most about this much over
    the whole run (each update is at most about lr per coordinate), the bound on how far MFF's
    fusion logits can go (``findings.attainable_depth_shift``). ``cfg`` must be resolved."""
    return float(sum(lr_at(s, cfg) for s in range(cfg.steps)))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: no decay on norms, biases, position embeddings and tokens (1-D parameters
    and ``model.no_weight_decay()``), but decay on MFF's fusion logits and projections (also
    inside a wrapping model, e.g. the supervised objective's ``backbone.fusion``)."""
    skip = model.no_weight_decay()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if "fusion" in name.split("."):  # MFF: logits (1-D) and projections are decayed
            decay.append(p)
        elif p.ndim <= 1 or name in skip or name.split(".")[-1] in skip:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def group_names(model: nn.Module, weight_decay: float = 0.05) -> tuple[list[str], list[str]]:
    """(decayed, not decayed) parameter names, for inspection and tests."""
    ids = {id(p): n for n, p in model.named_parameters()}
    g = param_groups(model, weight_decay)
    return [ids[id(p)] for p in g[0]["params"]], [ids[id(p)] for p in g[1]["params"]]
