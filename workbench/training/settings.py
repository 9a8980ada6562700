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
# with a linear head on its fused tokens (MFF's supervised comparison, training/supervised.py);
# "finetune" a pretrained encoder as a timm ViT classifier, MAE's recipe (training/finetune.py)
OBJECTIVES = ("mim", "supervised", "finetune")
GLOBAL_POOLS = ("avg", "token")  # fine-tuning's head input: mean patch token + fc_norm | cls token

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
# Fine-tuning (objective "finetune"): the None fields' defaults per preset, else MAE's ViT-B recipe
# (main_finetune.py / its README: batch 1024, blr 5e-4, 100 ImageNet epochs ~ 125k steps).
FINETUNE_PRESET_DEFAULTS: dict[str, dict[str, Any]] = {
    # 60 steps: ~1 min on 2 cores; the shipped tiny MAE on the shapes -> 28.5 % top-1 (chance 12.5)
    "tiny": dict(steps=60, batch_size=64, base_lr=1e-2, knn_every=0),
    "gpu-small": dict(steps=2000, batch_size=256, base_lr=1e-3, knn_every=0),
}
FINETUNE_PAPER_RECIPE: dict[str, Any] = dict(steps=125_000, batch_size=1024, base_lr=5e-4,
                                             knn_every=0)
# ... and the fields whose pretraining default differs from the fine-tuning recipe, which the
# finetune command (workbench.experiments.finetune.finetune_config) starts from: AdamW's default
# betas, min lr 1e-6, no reconstruction pictures, 512 held-out images for top-1 / top-5
FINETUNE_RECIPE: dict[str, Any] = dict(betas=(0.9, 0.999), min_lr=1e-6, picture_every=0,
                                       eval_images=512, ckpt_every=0)


@dataclass
class TrainConfig:
    """Everything a training run needs; ``None`` fields take the preset's default."""

    kind: str = "mff"  # the model kind: "mae" | "mff" (workbench.core.config.MODEL_KINDS)
    objective: str = "mim"  # "mim" | "supervised" (OBJECTIVES; supervised: kind "mff" only)
    label_smoothing: float = 0.1  # the supervised and fine-tuning objectives' cross-entropy
    # fine-tuning (objective "finetune"; MAE main_finetune.py's defaults; training/finetune.py)
    pretrained: str | None = None  # the checkpoint fine-tuned (any layout load_checkpoint reads)
    num_classes: int | None = None  # the head's outputs (None: the data's classes)
    global_pool: str = "avg"  # "avg": mean patch token + fc_norm (official) | "token": cls token
    layer_decay: float = 0.75  # lr x decay^(depth + 1 - layer id); ViT-B recipes use 0.65
    drop_path: float = 0.1  # stochastic depth, linear over the blocks up to this rate
    mixup: float = 0.8  # mixup alpha (0: off)
    cutmix: float = 1.0  # cutmix alpha (0: off)
    tune_blocks: int | str = "all"  # train the last k blocks (+ norm / fc_norm, head); 0: head
    label_fraction: float = 1.0  # a class-balanced, seeded share of the labelled images
    eval_every: int = 0  # held-out top-1 / top-5 every N steps (0: at the last step only)
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
    picture_every: int = 200  # reconstruction PNGs (pictures/step_NNNNNN.png); 0: off
    # the weights kept over training (snapshots/step_NNNNNN.safetensors, for probes.over_training):
    # None: none; "log": step 0, then 1, 2, 5 per decade and the last step; or a list of steps
    snapshot_steps: str | list[int] | None = None
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
        which called ``kind`` ``model`` and ``picture_every`` ``snapshot_every``, are read
        too)."""
        d = dict(d)
        if "kind" not in d and isinstance(d.get("model"), str):
            d["kind"] = d["model"]
        if "picture_every" not in d and "snapshot_every" in d:  # the PNGs' older name
            d["picture_every"] = d["snapshot_every"]
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
    eval_top1: float | None = None  # the fine-tuning objective's, on the held-out images
    eval_top5: float | None = None  # ... when there are more than 5 classes

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def resolve(cfg: TrainConfig) -> TrainConfig:
    """Fill the ``None`` defaults from the preset and check every setting."""
    if cfg.objective == "finetune":
        defaults = FINETUNE_PRESET_DEFAULTS.get(cfg.preset, FINETUNE_PAPER_RECIPE)
    else:
        defaults = PRESET_TRAIN_DEFAULTS.get(cfg.preset, PAPER_RECIPE)
    cfg = dataclasses.replace(cfg, **{k: v for k, v in defaults.items()
                                      if getattr(cfg, k) is None})
    cfg.betas = tuple(cfg.betas)
    for name in ("steps", "batch_size", "accum_steps", "log_every"):
        if not isinstance(getattr(cfg, name), int) or getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be a positive integer, got {getattr(cfg, name)!r}")
    for name in ("ckpt_every", "picture_every", "num_workers", "eval_images", "threads",
                 "knn_every", "eval_every"):
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
    snapshot_schedule(cfg)  # a bad snapshot_steps: an error naming it
    return cfg


SNAPSHOT_MANTISSAS = (1, 2, 5)  # snapshot_steps="log": three steps a decade


def snapshot_schedule(cfg: TrainConfig) -> list[int]:
    """The steps whose weights a run keeps (``snapshot_steps``), sorted: [] when off; "log" is
    step 0 (the initialisation, every probe's control), 1, 2, 5, 10, 20, 50, ... below
    ``steps``, and ``steps``; a list is taken as given (step 0 added), each in [0, steps].
    Computed from the spec, never stored: a run resumed with more steps extends its series."""
    spec, steps = cfg.snapshot_steps, cfg.steps
    if spec is None or spec == "none" or (isinstance(spec, (list, tuple)) and not spec):
        return []
    if cfg.objective != "mim":
        raise ValueError(f"snapshot_steps keeps a masked autoencoder's weights (objective "
                         f"'mim'); objective {cfg.objective!r} trains another model")
    if spec == "log":
        found, decade = {0, steps}, 1
        while decade < steps:
            found.update(m * decade for m in SNAPSHOT_MANTISSAS if m * decade < steps)
            decade *= 10
        return sorted(found)
    if isinstance(spec, (list, tuple)) and all(
            isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= steps for s in spec):
        return sorted({0, *spec})
    raise ValueError(f"snapshot_steps must be 'log', a list of steps in [0, steps={steps}] or "
                     f"None (off), got {spec!r}: e.g. --set snapshot_steps=log or --set "
                     f"snapshot_steps=[0,100,300]")


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
    if cfg.objective == "finetune":
        check_finetune(cfg)


def check_finetune(cfg: TrainConfig) -> None:
    """The fine-tuning settings' ranges (the encoder's depth bounds ``tune_blocks`` later)."""
    if not cfg.pretrained:
        raise ValueError("the finetune objective needs a pretrained checkpoint (pretrained=PATH)")
    if cfg.global_pool not in GLOBAL_POOLS:
        raise ValueError(f"global_pool must be one of {GLOBAL_POOLS}, got {cfg.global_pool!r}")
    for name in ("layer_decay", "label_fraction", "drop_path", "mixup", "cutmix"):
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not RANGES[name][0](v):
            raise ValueError(f"{name} must be a number {RANGES[name][1]}, got {v!r}")
    k = cfg.tune_blocks
    if k != "all" and (isinstance(k, bool) or not isinstance(k, int) or k < 0):
        raise ValueError(f"tune_blocks must be 'all' or a number of blocks >= 0, got {k!r}")
    n = cfg.num_classes
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 2):
        raise ValueError(f"num_classes must be an integer >= 2 (or None: the data's), got {n!r}")


# the fine-tuning numbers' ranges: (test, as said in an error)
RANGES = {"layer_decay": (lambda v: 0 < v <= 1, "in (0, 1] (1: no decay)"),
          "label_fraction": (lambda v: 0 < v <= 1, "in (0, 1]"),
          "drop_path": (lambda v: 0 <= v < 1, "in [0, 1)"),
          "mixup": (lambda v: v >= 0, ">= 0 (0: off)"),
          "cutmix": (lambda v: v >= 0, ">= 0 (0: off)")}


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
