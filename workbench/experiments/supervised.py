"""MFF's supervised comparison (finding 4), run for a pretraining run: the same multi-level
fusion trained with labels instead of pixel reconstruction, and where its weights go.

The labels are the built-in shapes' classes by default (``data="shapes"``: circle, ring, square,
... drawn over photo textures -- a semantic label, unlike the photo a tile comes from), or an image
folder's classes (``"builtin"`` keeps the photo-identity labels). :meth:`SupervisedFusionConfig.
matching` copies an MFF-MAE run's steps, peak lr, warmup, weight decay and seed.

The run is the one training loop's, with ``objective="supervised"``
(:mod:`workbench.training.supervised`): the same batches, AdamW groups, schedule, metric records
(the fusion weights among them), checkpoints and resume as pretraining. With ``out`` it keeps its
run directory (and continues it when run again); without, it trains in a temporary one.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from typing import Any

from ..checkpoints import read_checkpoint
from ..probes.fusion import FusionHistory, fusion_history
from ..training import IF_ANY, TrainConfig, run_training

SUPERVISED_BETAS = (0.9, 0.999)  # AdamW's, as the comparison has always used
HELDOUT_IMAGES = 512  # held-out images of the accuracy


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
    device: str = "cpu"  # as TrainConfig.device ("auto": cuda if available)
    out: str | None = None  # a run directory to keep (None: a temporary one, removed after)

    @classmethod
    def matching(cls, run: TrainConfig, **overrides) -> "SupervisedFusionConfig":
        """The supervised comparison for a pretraining run: its preset, model settings (mask
        settings aside), steps, peak lr, warmup, weight decay and seed; ``overrides`` (e.g. a
        smaller ``batch_size`` on a CPU: the peak lr stays the run's) win."""
        from ..training.schedule import peak_lr, warmup_steps
        from ..training.settings import resolve

        run = resolve(run)
        model = {k: v for k, v in run.model_overrides.items() if not k.startswith("mask_")}
        fields = dict(preset=run.preset, model_overrides=model, steps=run.steps,
                      batch_size=run.batch_size, lr=peak_lr(run), warmup=warmup_steps(run),
                      weight_decay=run.weight_decay, seed=run.seed)
        return cls(**{**fields, **overrides})

    def train_config(self, out: str) -> TrainConfig:
        """The training run of this comparison, written to ``out``: the supervised objective,
        this lr outright (not scaled by the batch), a warmup of at least one step, no monitor,
        pictures or intermediate checkpoints; the accuracy on :data:`HELDOUT_IMAGES` images."""
        return TrainConfig(
            kind="mff", objective="supervised", preset=self.preset,
            model_overrides=dict(self.model_overrides), data=self.data, steps=self.steps,
            batch_size=self.batch_size, lr=self.lr, warmup=max(1, self.warmup),
            weight_decay=self.weight_decay, betas=SUPERVISED_BETAS,
            label_smoothing=self.label_smoothing, log_every=self.log_every, seed=self.seed,
            progress=self.progress, device=self.device, out=str(out),
            resume=IF_ANY if self.out is not None else False, ckpt_every=0, picture_every=0, knn_every=0,
            eval_images=HELDOUT_IMAGES)


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


def train_supervised_fusion(cfg: SupervisedFusionConfig | None = None) -> SupervisedFusionResult:
    """Train the fusion classifier (:class:`workbench.training.FusionClassifier`) with
    cross-entropy on the data's labels; its normalised fusion weights are logged every
    ``log_every`` steps (and before the first step) and read back as the history. The caller's
    global random generators are as they were afterwards."""
    cfg = cfg or SupervisedFusionConfig()
    with tempfile.TemporaryDirectory(prefix="supervised-fusion-") as scratch:
        out = cfg.out if cfg.out is not None else scratch
        result = run_training(cfg.train_config(out))
        head = read_checkpoint(result.checkpoint, map_location="cpu", mmap=True)["model"]
        return SupervisedFusionResult(fusion_history(out), result.heldout_accuracy,
                                      result.loss, int(head["head.weight"].shape[0]))
