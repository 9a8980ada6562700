"""One training step, the thing the loop runs and the benchmarks time.

:func:`build_train_state` makes the model, AdamW, the schedule and the gradient scaler exactly as a
run does; :func:`train_step` does one optimizer step on ``accum_steps`` micro-batches: per-sample
seeded masks, autocast, gradient accumulation (DDP all-reduces on the last micro-batch only), the
loss averaged over ranks, a non-finite loss stopped before it reaches the weights, clipping, the
scaler, AdamW and the schedule.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
import torch.distributed as dist
import torch.nn as nn

from ..config import ModelConfig
from ..models import MaskedAutoencoder, model_from_config
from ..models.masking import seeded_masks
from .distributed import Dist
from .rng import seed_everything
from .schedule import lr_at, param_groups, peak_lr
from .settings import TrainConfig


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def pick_precision(precision: str, device: torch.device) -> str:
    """The precision setting for this device ("auto": bf16 on a GPU, fp32 on the CPU)."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("precision fp16 (with a GradScaler) needs a CUDA device; use fp32/bf16")
    return precision


@dataclass
class TrainState:
    """What one optimizer step reads and changes."""

    raw: MaskedAutoencoder  # the module itself: weights, checkpoints, probes
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    device: torch.device
    precision: str  # "fp32" | "bf16" | "fp16"
    accum_steps: int = 1
    clip_grad: float | None = None
    world: int = 1  # ranks
    step: int = 0  # optimizer steps done
    model: nn.Module | None = None  # what the step calls: ``raw``, compiled and/or DDP-wrapped

    def __post_init__(self) -> None:
        if self.model is None:
            self.model = self.raw

    def wrap(self, compile_model: bool, dd: Dist) -> None:
        """``torch.compile`` and / or DDP around the module (after any weights are loaded)."""
        model = torch.compile(self.raw) if compile_model else self.raw
        if dd.world > 1:
            model = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.model, self.world = model, dd.world

    def autocast(self) -> torch.autocast:
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype,
                              enabled=self.precision in ("bf16", "fp16"))

    @property
    def lr(self) -> float:
        """The learning rate the next step uses."""
        return self.optimizer.param_groups[0]["lr"]

    def state_dict(self) -> dict:
        """Optimizer, schedule and scaler state, as a checkpoint stores them."""
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None}

    def load_state_dict(self, ck: dict) -> None:
        """Model, optimizer, schedule, scaler and step from a training checkpoint."""
        self.raw.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scheduler.load_state_dict(ck["scheduler"])
        if ck.get("scaler"):
            self.scaler.load_state_dict(ck["scaler"])
        self.step = int(ck["step"])


def build_train_state(cfg: TrainConfig, mcfg: ModelConfig, device: torch.device,
                      precision: str) -> TrainState:
    """A fresh model (initialised from ``cfg.seed``), AdamW over :func:`param_groups` (the fused
    implementation, on the CPU too), the warmup + cosine schedule and a gradient scaler (enabled
    for fp16). ``cfg`` must be resolved (:func:`workbench.training.resolve`). Seeds the global
    generators."""
    seed_everything(cfg.seed)
    model = model_from_config(mcfg).to(device)
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=peak_lr(cfg),
                            betas=cfg.betas, fused=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_at(s, cfg) / peak_lr(cfg))
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    return TrainState(model, opt, sched, scaler, device, precision, cfg.accum_steps,
                      cfg.clip_grad)


def train_step(state: TrainState,
               micro_batches: Iterable[tuple[torch.Tensor, Sequence[int]]]) -> float:
    """One optimizer step on ``state.accum_steps`` micro-batches ``(imgs [b, 3, S, S], mask
    seeds [b])`` of this rank; returns the step's loss (mean over micro-batches and ranks).

    A non-finite loss raises :class:`TrainingDiverged` before the optimizer step, so the weights
    stay those of the last good step.
    """
    mcfg, device = state.raw.cfg, state.device
    total = torch.zeros((), device=device)
    for micro, (imgs, seeds) in enumerate(micro_batches):
        imgs = imgs.to(device, non_blocking=True)
        masking = seeded_masks(seeds, mcfg.grid_size, mcfg.mask_ratio, mcfg.mask_strategy,
                               device)  # each sample's from its own seed
        last = micro == state.accum_steps - 1
        with (state.model.no_sync() if state.world > 1 and not last else contextlib.nullcontext()):
            with state.autocast():
                loss = state.model(imgs, masking=masking).loss / state.accum_steps
            state.scaler.scale(loss).backward()  # DDP all-reduces gradients on the last micro
        total += loss.detach()
    if state.world > 1:
        dist.all_reduce(total)
        total /= state.world
    value = float(total)
    if not math.isfinite(value):
        raise TrainingDiverged(f"loss is {value} at step {state.step + 1}")
    if state.clip_grad:
        state.scaler.unscale_(state.optimizer)
        torch.nn.utils.clip_grad_norm_(state.raw.parameters(), state.clip_grad)
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.optimizer.zero_grad(set_to_none=True)
    state.scheduler.step()
    state.step += 1
    return value
