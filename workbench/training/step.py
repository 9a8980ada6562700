"""One training step, the thing the loop runs and the benchmarks time.

:func:`build_train_state` makes the model, AdamW, the schedule and the gradient scaler exactly as a
run does; :func:`train_step` does one optimizer step on ``accum_steps`` micro-batches: the
objective's loss (masked reconstruction with per-sample seeded masks, or the supervised
cross-entropy), autocast, gradient accumulation (DDP all-reduces on the last micro-batch only), the
loss averaged over ranks, a non-finite loss kept from the weights, clipping, the scaler, AdamW and
the schedule.

The step never waits for the device: the loss stays a device tensor, and a non-finite loss is
recorded on the device (:meth:`TrainState.note_divergence`) and turns that update and every later
one into a no-op (fused AdamW's ``found_inf``). The loop asks :meth:`TrainState.raise_if_diverged`
-- one host synchronisation -- only where it writes something (log lines, checkpoints,
pictures, weight snapshots), so on a GPU the host queues the next step while the device finishes
this one.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Sequence

import torch
import torch.distributed as dist
import torch.nn as nn

from ..core.config import ModelConfig
from ..models import MaskedAutoencoder, model_from_config
from ..models.masking import seeded_masks
from .distributed import Dist
from ..core.seeds import seed_everything
from .schedule import lr_at, param_groups, peak_lr
from .settings import TrainConfig
from .supervised import FusionClassifier, supervised_loss

if TYPE_CHECKING:
    from ..checkpoints.classifier import Classifier
    from .finetune import FinetuneLoss


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

    raw: MaskedAutoencoder | FusionClassifier | Classifier  # the module itself: weights, probes
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    device: torch.device
    precision: str  # "fp32" | "bf16" | "fp16"
    accum_steps: int = 1
    clip_grad: float | None = None
    world: int = 1  # ranks
    objective: str = "mim"  # TrainConfig.objective: what micro_loss computes
    label_smoothing: float = 0.0  # the supervised objective's
    finetune_loss: FinetuneLoss | None = None  # the fine-tuning objective's (mixup, soft targets)
    step: int = 0  # optimizer steps done
    model: nn.Module | None = None  # what the step calls: ``raw``, compiled and/or DDP-wrapped
    # on the device, so the step need not wait for it: the first step whose loss was not finite
    # (0: none yet) and that loss
    diverged_step: torch.Tensor | None = None  # [] int64
    diverged_loss: torch.Tensor | None = None  # [] float32

    def __post_init__(self) -> None:
        if self.model is None:
            self.model = self.raw
        if self.diverged_step is None:
            self.diverged_step = torch.zeros((), dtype=torch.int64, device=self.device)
            self.diverged_loss = torch.zeros((), device=self.device)

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

    def note_divergence(self, loss: torch.Tensor) -> torch.Tensor:
        """Record (on the device, without waiting for it) whether this step's ``loss`` is the
        first non-finite one; returns the flag the optimizer skips on, 1.0 from that step on."""
        first = ~torch.isfinite(loss) & (self.diverged_step == 0)
        self.diverged_step = torch.where(first, self.step + 1, self.diverged_step)
        self.diverged_loss = torch.where(first, loss.float(), self.diverged_loss)
        return (self.diverged_step > 0).float()

    def raise_if_diverged(self) -> None:
        """:class:`TrainingDiverged` naming the first step with a non-finite loss, if there was
        one (a host synchronisation). That step's update and every later one were skipped, so
        the weights are those of the step before it."""
        at = int(self.diverged_step)
        if at:
            raise TrainingDiverged(f"loss is {float(self.diverged_loss)} at step {at}")

    @property
    def lr(self) -> float:
        """The learning rate the next step uses (the schedule's: fine-tuning's layer-decay
        groups each take ``lr_scale`` times it)."""
        group = self.optimizer.param_groups[0]
        return group["lr"] / group.get("lr_scale", 1.0)

    def state_dict(self) -> dict:
        """Optimizer, schedule and scaler state, as a checkpoint stores them."""
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None}

    def load_state_dict(self, ck: dict) -> None:
        """Model, optimizer, schedule, scaler and step from a training checkpoint."""
        self.raw.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        for group in self.optimizer.param_groups:  # an older run's saved flags (unfused AdamW)
            group["fused"], group["foreach"] = True, None  # would refuse the step's found_inf
        self.scheduler.load_state_dict(ck["scheduler"])
        if ck.get("scaler"):
            self.scaler.load_state_dict(ck["scaler"])
        self.step = int(ck["step"])


def build_train_state(cfg: TrainConfig, mcfg: ModelConfig, device: torch.device,
                      precision: str, num_classes: int | None = None) -> TrainState:
    """A fresh model (initialised from ``cfg.seed``: the autoencoder, or for the supervised
    objective a :class:`FusionClassifier` over ``num_classes``), AdamW over :func:`param_groups`
    (the fused implementation, on the CPU too), the warmup + cosine schedule and a gradient scaler
    (enabled for fp16). ``cfg`` must be resolved (:func:`workbench.training.resolve`). Seeds the
    global generators."""
    seed_everything(cfg.seed)
    if cfg.objective != "mim" and num_classes is None:
        raise ValueError(f"the {cfg.objective} objective needs the data's number of classes")
    finetune_loss = None
    if cfg.objective == "supervised":
        model = FusionClassifier(mcfg, num_classes).to(device)
    elif cfg.objective == "finetune":  # the pretrained encoder as a timm ViT, a fresh head
        from .finetune import FinetuneLoss, build_classifier

        model = build_classifier(cfg, num_classes).to(device)
        finetune_loss = FinetuneLoss(cfg, num_classes)
    else:
        model = model_from_config(mcfg).to(device)
    opt = torch.optim.AdamW(optimizer_groups(model, cfg), lr=peak_lr(cfg), betas=cfg.betas,
                            fused=True)
    # every group's lr is its initial one (fine-tuning: peak x lr_scale) times the schedule's
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_at(s, cfg) / peak_lr(cfg))
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    return TrainState(model, opt, sched, scaler, device, precision, cfg.accum_steps,
                      cfg.clip_grad, objective=cfg.objective, label_smoothing=cfg.label_smoothing,
                      finetune_loss=finetune_loss)


def optimizer_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """AdamW's parameter groups: :func:`param_groups`, or for fine-tuning timm's layer-decay
    groups (:func:`workbench.training.finetune.layer_decay_groups`)."""
    if cfg.objective == "finetune":
        from .finetune import layer_decay_groups

        return layer_decay_groups(model, cfg.weight_decay, cfg.layer_decay, peak_lr(cfg))
    return param_groups(model, cfg.weight_decay)


def micro_loss(state: TrainState, imgs: torch.Tensor, targets: Sequence[int] | torch.Tensor
               ) -> torch.Tensor:
    """The objective's loss of one micro-batch ``imgs`` (on the device): ``targets`` are the
    samples' mask seeds for masked image modelling (each sample's mask drawn from its own seed),
    their class labels for the supervised objective, labels and the micro-batch's draw seed
    (:class:`workbench.training.finetune.StepTargets`) for fine-tuning."""
    if state.objective == "finetune":
        return state.finetune_loss(state.model, imgs, targets, state.autocast)
    if state.objective == "supervised":
        labels = torch.as_tensor(targets).to(state.device, non_blocking=True)
        with state.autocast():
            return supervised_loss(state.model, imgs, labels, state.label_smoothing)
    mcfg = state.raw.cfg
    masking = seeded_masks(targets, mcfg.grid_size, mcfg.mask_ratio, mcfg.mask_strategy,
                           state.device)
    with state.autocast():
        return state.model(imgs, masking=masking).loss


def train_step(state: TrainState,
               micro_batches: Iterable[tuple[torch.Tensor, Sequence[int]]]) -> torch.Tensor:
    """One optimizer step on ``state.accum_steps`` micro-batches ``(imgs [b, 3, S, S], targets
    [b])`` of this rank (targets: mask seeds, or class labels, see :func:`micro_loss`); returns
    the step's loss (mean over micro-batches and ranks) as a 0-dim device tensor, without
    waiting for the device.

    A non-finite loss is not applied: that update and every later one are skipped on the device
    (the weights stay those of the last good step) until :meth:`TrainState.raise_if_diverged`
    reports it.
    """
    device = state.device
    total = torch.zeros((), device=device)
    for micro, (imgs, targets) in enumerate(micro_batches):
        imgs = imgs.to(device, non_blocking=True)
        last = micro == state.accum_steps - 1
        with (state.model.no_sync() if state.world > 1 and not last else contextlib.nullcontext()):
            loss = micro_loss(state, imgs, targets) / state.accum_steps
            state.scaler.scale(loss).backward()  # DDP all-reduces gradients on the last micro
        total += loss.detach()
    if state.world > 1:
        dist.all_reduce(total)
        total /= state.world
    skip = state.note_divergence(total)
    if state.scaler.is_enabled():  # fp16: the scaler sets AdamW's found_inf from the gradients
        poison = torch.where(skip > 0, math.inf, 0.0)  # so a divergence reaches it as inf
        for p in state.raw.parameters():
            if p.grad is not None:
                p.grad.add_(poison)
    if state.clip_grad:
        state.scaler.unscale_(state.optimizer)
        torch.nn.utils.clip_grad_norm_(state.raw.parameters(), state.clip_grad)
    # fused AdamW reads ``found_inf``: nonzero leaves weights, moments and step counts as they
    # were (with fp16 the scaler replaces it by its own)
    state.optimizer.found_inf = skip
    try:
        state.scaler.step(state.optimizer)
    finally:
        state.optimizer.__dict__.pop("found_inf", None)
    state.scaler.update()
    state.optimizer.zero_grad(set_to_none=True)
    state.scheduler.step()
    state.step += 1
    return total
