"""What a training run is asked to do: :class:`TrainConfig`, its per-preset defaults and checks."""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from ..core.config import AUGMENTATIONS, ModelConfig, model_config

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
IF_ANY = "if-any"  # TrainConfig.resume: continue a checkpoint when the run directory has one
DEVICES = r"auto|cpu|mps|cuda(:\d+)?"  # the device setting's forms
# what a run's step minimises: "mim" masked image modelling (the model's own reconstruction loss,
# MAE / MFF-MAE pretraining); "supervised" cross-entropy on the data's class labels, an MFF encoder
# with a linear head on its fused tokens (MFF's supervised comparison, training/supervised.py)
OBJECTIVES = ("mim", "supervised")

# Defaults per preset for the fields left as None. tiny: a few minutes on a 2-core CPU.
PRESET_TRAIN_DEFAULTS: dict[str, dict[str, Any]] = {
    "tiny": dict(steps=300, batch_size=64, base_lr=4e-3, knn_every=100),
    # ~20 epochs of the built-in tiles per 1k steps; a few minutes on one H100 with bf16
    "gpu-small": dict(steps=5000, batch_size=256, base_lr=1.5e-3, knn_every=500),
}
# The CPU learning regime (issue 28; README "The learning regime"): the tiny preset pretrained on
# the built-in shapes for 600 steps. Chosen by whether the encoder learns -- its linear probe
# against its own initialisation (probes.learning) -- before any claim was looked at: on the 15
# built-in photos the tiny encoders probe no better than at initialisation; on the shapes they
# gain >= 10 points. The gallery's shipped runs, `make figures TRAIN=1` and the CPU evidence
# profile train with it.
LEARNING_REGIME: dict[str, Any] = dict(data="shapes", steps=600)
# The papers' recipe, the defaults of every preset without its own (vit-s/b/l/h): batch 4096,
# base lr 1.5e-4, 800 ImageNet epochs (~250k steps); the kNN monitor off unless asked for.
PAPER_RECIPE: dict[str, Any] = dict(steps=250_000, batch_size=4096, base_lr=1.5e-4, knn_every=0)


@dataclass
class TrainConfig:
    """Everything a training run needs; ``None`` fields take the preset's default."""

    kind: str = "mff"  # the model kind: "mae" | "mff" (workbench.core.config.MODEL_KINDS)
    objective: str = "mim"  # "mim" | "supervised" (OBJECTIVES; supervised: kind "mff" only)
    label_smoothing: float = 0.1  # the supervised objective's cross-entropy
    preset: str = "tiny"
    model_overrides: dict[str, Any] = field(default_factory=dict)  # any ModelConfig field
    data: str = "builtin"  # "builtin" photos, "shapes", or an image folder
    augment: str = "mae"  # training augmentation: "mae" | "resize-crop" (core.config.AUGMENTATIONS)
    steps: int | None = None  # optimizer steps (schedule length)
    stop_after: int | None = None  # stop early at this step (checkpointed), schedule unchanged
    batch_size: int | None = None  # global batch, over all ranks and accumulation steps
    accum_steps: int = 1
    base_lr: float | None = None  # peak lr = base_lr * batch_size / 256
    lr: float | None = None  # absolute peak lr; overrides base_lr
    min_lr: float = 0.0
    warmup: float = 0.05  # warmup steps; a value < 1 is a fraction of ``steps``
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    clip_grad: float | None = None  # max gradient norm
    device: str = "auto"  # "auto" (cuda if available) | "cpu" | "cuda" | "cuda:N"
    precision: str = "auto"  # "auto" (bf16 on GPU, fp32 on CPU) | "fp32" | "bf16" | "fp16"
    compile: bool = False
    seed: int = 0
    out: str = "runs/mff-tiny"
    # True: continue the checkpoint in ``out`` (an error without one); "if-any" (IF_ANY): continue
    # it if there is one, else start a new run (batches that may have been interrupted)
    resume: bool | str = False
    ckpt_every: int = 200  # steps; 0: only at the end
    log_every: int = 10
    snapshot_every: int = 200  # reconstruction PNGs; 0: off
    eval_images: int = 64  # held-out images for the final held-out loss
    num_workers: int = 0  # DataLoader workers (0: load in the training process)
    threads: int | None = None  # CPU threads for torch (None: torch's default, all cores)
    progress: bool = True  # tqdm bar on a terminal, else a line per log step
    # feature monitor (probes/monitor.py, wired by experiments.pretraining): held-out weighted-kNN and fixed-C linear-probe
    # accuracy of the encoder's mean-pooled features, logged as knn_acc / probe_acc at step 0
    # and every knn_every steps (0: off; None: the preset's; bench/knn_monitor.py: its cost)
    knn_every: int | None = None
    knn_data: str | None = None  # labelled images; None: the run's image folder, else "shapes"
    knn_images: int = 1024  # half bank (training split), half queries (held-out split)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    def continued(self, fields: dict[str, Any], overrides: dict[str, Any],
                  **session: Any) -> "TrainConfig":
        """This (saved) run's settings to continue it: ``fields`` and model ``overrides`` given
        anew replace the saved ones, ``session`` (out, device, ...) is this invocation's. An
        earlier ``stop_after`` is dropped unless given again: a resumed run goes on to the end."""
        return dataclasses.replace(self, **{"stop_after": None, **fields, **session},
                                   model_overrides={**self.model_overrides, **overrides})

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """The inverse of :meth:`to_dict`; unknown keys are ignored (files of older versions,
        which called ``kind`` ``model``, are read too)."""
        d = dict(d)
        if "kind" not in d and isinstance(d.get("model"), str):
            d["kind"] = d["model"]
        names = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in names}
        if "betas" in d:
            d["betas"] = tuple(d["betas"])
        return cls(**d)


@dataclass
class TrainResult:
    step: int
    loss: float  # mean training loss of the last logged interval
    heldout_loss: float | None
    images_per_s: float
    wall_s: float
    out: str
    checkpoint: str
    interrupted: str | None = None  # "SIGINT" / "SIGTERM" when a signal stopped the run early
    # the final loss on training images, when the data has no held-out images (heldout_loss None)
    train_images_loss: float | None = None
    heldout_accuracy: float | None = None  # the supervised objective's, on the held-out images

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def resolve(cfg: TrainConfig) -> TrainConfig:
    """Fill the ``None`` defaults from the preset and check every setting."""
    defaults = PRESET_TRAIN_DEFAULTS.get(cfg.preset, PAPER_RECIPE)
    cfg = dataclasses.replace(cfg, **{k: v for k, v in defaults.items()
                                      if getattr(cfg, k) is None})
    cfg.betas = tuple(cfg.betas)
    for name in ("steps", "batch_size", "accum_steps", "log_every"):
        if not isinstance(getattr(cfg, name), int) or getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be a positive integer, got {getattr(cfg, name)!r}")
    for name in ("ckpt_every", "snapshot_every", "num_workers", "eval_images", "threads",
                 "knn_every"):
        v = getattr(cfg, name)
        if name == "threads" and v is None:
            continue
        if not isinstance(v, int) or v < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {getattr(cfg, name)!r}")
    for name in ("base_lr", "lr", "min_lr", "warmup", "weight_decay", "clip_grad"):
        v = getattr(cfg, name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0):
            raise ValueError(f"{name} must be a non-negative number, got {v!r}")
    if len(cfg.betas) != 2 or not all(0 <= b < 1 for b in cfg.betas):
        raise ValueError(f"betas must be two numbers in [0, 1), got {cfg.betas!r}")
    if not isinstance(cfg.knn_images, int) or cfg.knn_images < 2:
        raise ValueError(f"knn_images must be an integer >= 2, got {cfg.knn_images!r}")
    if cfg.stop_after is not None and not 1 <= cfg.stop_after <= cfg.steps:
        raise ValueError(f"stop_after must be in [1, steps={cfg.steps}], got {cfg.stop_after}")
    if cfg.augment not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {cfg.augment!r}")
    if cfg.resume not in (False, True, IF_ANY):
        raise ValueError(f"resume must be True, False or {IF_ANY!r}, got {cfg.resume!r}")
    if not isinstance(cfg.device, str) or not re.fullmatch(DEVICES, cfg.device):
        raise ValueError(f"device {cfg.device!r} is not one of auto, cpu, cuda, cuda:N, mps")
    if cfg.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {cfg.precision!r}")
    check_objective(cfg)
    return cfg


def check_objective(cfg: TrainConfig) -> None:
    """A known objective; the supervised one reads MFF's fused tokens, so it needs kind "mff"."""
    if cfg.objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {cfg.objective!r}")
    if cfg.objective == "supervised" and cfg.kind != "mff":
        raise ValueError(f"the supervised objective trains MFF's fusion with labels: kind must be "
                         f"'mff', got {cfg.kind!r}")
    v = cfg.label_smoothing
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
        raise ValueError(f"label_smoothing must be a number in [0, 1), got {v!r}")


def check_mask_count(mcfg: ModelConfig, preset: str) -> None:
    """Training needs at least one masked patch (the loss is over masked patches) and one visible
    one (the encoder's input): refuse ratios that leave either side empty, naming the counts."""
    from ..models.masking import num_kept

    grid, n = mcfg.grid_size, mcfg.num_patches
    kept = num_kept(n, mcfg.mask_ratio)
    where = f"the {n} patches ({grid}x{grid} grid of {mcfg.patch_size} px, preset {preset!r})"
    if kept == n:
        raise ValueError(f"mask_ratio {mcfg.mask_ratio} masks none of {where}: nothing to "
                         f"predict, the loss is empty; MAE trains at 0.75")
    if kept == 0:
        raise ValueError(f"mask_ratio {mcfg.mask_ratio} masks all of {where}: the encoder sees "
                         f"nothing; keep at least one patch (mask_ratio <= {1 - 1 / n:.4f})")


def build_model_config(cfg: TrainConfig) -> ModelConfig:
    return model_config(cfg.kind, cfg.preset, **cfg.model_overrides)
