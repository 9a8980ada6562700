"""MFF's supervised comparison (finding 4): the same multi-level fusion inside a ViT trained
with labels instead of pixel reconstruction. The paper reports that a supervised ViT puts most of
the fusion weight on the last layer -- the opposite of MAE, whose weights move toward shallow
layers -- which is its argument that pixel MIM wastes modelling capability on low-level detail.

The labels are the built-in shapes' classes by default (``data="shapes"``: circle, ring, square,
... drawn over photo textures -- a semantic label, unlike the photo a tile comes from), or an image
folder's classes (``"builtin"`` keeps the photo-identity labels). :meth:`SupervisedFusionConfig.
matching` copies an MFF-MAE run's steps, peak lr, warmup, weight decay and seed, so the two
objectives differ in their loss only. The classifier reads the normed fused tokens (mean-pooled),
exactly what MFF's decoder reads, through one linear layer.

This is a short in-memory experiment, not a training run: no checkpoints, no DDP. Runs that must
survive a crash or scale out belong to :func:`workbench.training.train`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ..core.config import ModelConfig, model_config
from ..data import StepBatches, build_dataset, fixed_batch
from ..models.mff import MFFMaskedAutoencoder
from ..probes.fusion import FusionHistory
from ..core.seeds import preserved_rng
from .schedule import warmup_cosine

if TYPE_CHECKING:
    from .settings import TrainConfig


@dataclass
class SupervisedFusionConfig:
    preset: str = "tiny"
    model_overrides: dict[str, Any] = field(default_factory=dict)  # any ModelConfig field
    data: str = "shapes"
    steps: int = 300  # the tiny MAE run's
    batch_size: int = 64
    lr: float = 1e-3  # peak AdamW lr (the tiny MAE run's 4e-3 * 64 / 256)
    weight_decay: float = 0.05
    warmup: int = 15  # the tiny MAE run's 5 % of 300 steps
    label_smoothing: float = 0.1
    log_every: int = 10
    seed: int = 0
    progress: bool = True

    @classmethod
    def matching(cls, run: "TrainConfig", **overrides) -> "SupervisedFusionConfig":
        """The supervised comparison for a pretraining run: its preset, model settings (mask
        settings aside), steps, peak lr, warmup, weight decay and seed; ``overrides`` (e.g. a
        smaller ``batch_size`` on a CPU: the peak lr stays the run's) win."""
        from .schedule import peak_lr, warmup_steps
        from .settings import resolve

        run = resolve(run)
        model = {k: v for k, v in run.model_overrides.items() if not k.startswith("mask_")}
        fields = dict(preset=run.preset, model_overrides=model, steps=run.steps,
                      batch_size=run.batch_size, lr=peak_lr(run), warmup=warmup_steps(run),
                      weight_decay=run.weight_decay, seed=run.seed)
        return cls(**{**fields, **overrides})


@dataclass
class SupervisedFusionResult:
    history: FusionHistory  # fusion weights over training, as fusion_history() returns
    heldout_accuracy: float  # on held-out images of ``data`` (shapes: shape classes)
    train_loss: float  # mean cross-entropy of the last logged interval
    num_classes: int

    def to_dict(self) -> dict:
        return {"history": self.history.to_dict(),
                "heldout_accuracy": self.heldout_accuracy, "train_loss": self.train_loss,
                "num_classes": self.num_classes}


class FusionClassifier(nn.Module):
    """MFF's encoder and fusion, with a linear head on the normed, mean-pooled fused tokens."""

    has_fusion = True

    def __init__(self, cfg: ModelConfig, num_classes: int):
        super().__init__()
        # decoder_depth 0 would not build; one tiny block is cheap and never called
        self.backbone = MFFMaskedAutoencoder(dataclasses.replace(
            cfg, decoder_depth=1, decoder_embed_dim=32, decoder_num_heads=1))
        self.head = nn.Linear(cfg.embed_dim, num_classes)

    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        """[B, 3, S, S] -> logits [B, classes]; every patch visible (mask ratio 0)."""
        enc = self.backbone.forward_encoder(imgs, 0.0)
        fused = self.backbone.decoder_input(enc.features)  # norm(Σ softmax(w)_i P_i(f_i)) [B, 1+N, D]
        return self.head(fused[:, 1:].mean(dim=1))

    def fusion_weights(self) -> torch.Tensor:
        return self.backbone.fusion_weights()

    @property
    def fused_layers(self) -> list[int]:
        return self.backbone.fused_layers


def train_supervised_fusion(cfg: SupervisedFusionConfig | None = None) -> SupervisedFusionResult:
    """Train :class:`FusionClassifier` with cross-entropy on the data's labels and log the
    normalised fusion weights every ``log_every`` steps (and before the first step). The caller's
    global random generators are as they were afterwards."""
    with preserved_rng():
        return _train_supervised_fusion(cfg or SupervisedFusionConfig())


def _train_supervised_fusion(cfg: SupervisedFusionConfig) -> SupervisedFusionResult:
    from tqdm.auto import tqdm

    if cfg.steps < 1 or cfg.batch_size < 1 or cfg.log_every < 1:
        raise ValueError("steps, batch_size and log_every must be positive integers")
    mcfg = model_config("mff", cfg.preset, **cfg.model_overrides)
    data = build_dataset(cfg.data, mcfg.img_size, "train", train_transform=True)
    num_classes = len(data.classes)
    if num_classes < 2:
        raise ValueError(f"supervised fusion needs at least 2 classes, {cfg.data!r} has "
                         f"{num_classes}")
    torch.manual_seed(cfg.seed)
    model = FusionClassifier(mcfg, num_classes)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999),
                            weight_decay=cfg.weight_decay)
    warm = max(1, cfg.warmup)  # linear warmup, then cosine to 0, as in pretraining
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: warmup_cosine(step, 1.0, warm, cfg.steps))
    order = StepBatches(len(data), cfg.batch_size, cfg.seed, steps=cfg.steps)
    loader = DataLoader(data, batch_sampler=order)
    steps, weights = [0], [model.fusion_weights().double()]
    loss_sum, loss_n, last_loss = 0.0, 0, float("nan")
    model.train()
    for step, (imgs, labels) in enumerate(tqdm(loader, total=cfg.steps, desc="supervised fusion",
                                               disable=not cfg.progress), start=1):
        loss = F.cross_entropy(model(imgs), labels, label_smoothing=cfg.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        loss_sum, loss_n = loss_sum + float(loss.detach()), loss_n + 1
        if step % cfg.log_every == 0 or step == cfg.steps:
            steps.append(step)
            weights.append(model.fusion_weights().double())
            last_loss, loss_sum, loss_n = loss_sum / loss_n, 0.0, 0
    model.eval()
    imgs, labels = fixed_batch(cfg.data, mcfg.img_size, 512, "heldout", cfg.seed)
    with torch.no_grad():
        acc = float((model(imgs).argmax(-1) == labels).float().mean())
    history = FusionHistory(torch.tensor(steps), torch.stack(weights), model.fused_layers)
    return SupervisedFusionResult(history, acc, last_loss, num_classes)
