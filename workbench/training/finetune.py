"""The fine-tuning objective (``TrainConfig(objective="finetune")``): MAE's ``main_finetune.py``
recipe inside the one loop.

The model is a timm ``VisionTransformer`` made from the pretrained encoder
(:func:`workbench.checkpoints.classifier_from_encoder`: drop path, avg pool + fc_norm or the cls
token, head trunc_normal std 2e-5); ``tune_blocks`` freezes all but the last blocks. AdamW gets
timm's layer-decay groups (:func:`layer_decay_groups`; each group's lr is the schedule's times its
``lr_scale``). A step mixes its micro-batch with timm's ``Mixup`` (mixup 0.8 / cutmix 1.0, label
smoothing inside the soft targets) and minimises ``SoftTargetCrossEntropy``; without mixup and
cutmix, cross-entropy with label smoothing. Mixup draws from NumPy's global generator and drop
path from torch's: both are seeded per micro-batch from (seed, step, micro-batch, rank)
(:func:`draw_seed`), so a resumed run draws exactly what it would have drawn. (Mixup pairs the
samples of one rank's micro-batch, so unlike pretraining, 2 ranks equal 1 process only with
mixup, cutmix and drop path off.) The evaluation is top-1 / top-5 on the held-out images.
"""
from __future__ import annotations

import json
from typing import NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from timm.optim import param_groups_layer_decay

from ..checkpoints import CheckpointError, load_checkpoint
from ..checkpoints.classifier import Classifier, classifier_from_encoder, freeze_blocks
from ..core.io import atomic_write_text
from ..core.seeds import derive_seed
from ..data import LabelSubset, balanced_subset
from ..models import MaskedAutoencoder, eval_mode
from .settings import TrainConfig

MIXUP_PROB, MIXUP_SWITCH_PROB = 1.0, 0.5  # main_finetune.py's defaults (mode "batch")
DRAW = 11  # derive_seed purpose of a micro-batch's mixup and drop-path draws
SUBSET_FILE = "label_subset.json"  # the run's per-class image counts (label_fraction < 1)


class StepTargets(NamedTuple):
    """What a fine-tuning micro-batch brings besides its images."""

    labels: Sequence[int] | torch.Tensor  # [b] class indices
    seed: int  # of this micro-batch's mixup and drop-path draws


def draw_seed(seed: int, step: int, micro: int, rank: int) -> int:
    return derive_seed(seed, step, micro, rank, DRAW)


def open_encoder(path: str) -> MaskedAutoencoder:
    """The pretrained encoder of checkpoint ``path`` (any layout load_checkpoint reads), or a
    :class:`CheckpointError` that says why it cannot be fine-tuned."""
    try:
        return load_checkpoint(path)
    except FileNotFoundError:
        raise
    except CheckpointError as e:
        raise CheckpointError(f"{path} gives no ViT encoder to fine-tune: {e}") from e


def tune_block_count(cfg: TrainConfig, depth: int) -> int:
    """``tune_blocks`` as a number of blocks: "all" is ``depth``."""
    k = depth if cfg.tune_blocks == "all" else int(cfg.tune_blocks)
    if not 0 <= k <= depth:
        raise ValueError(f"tune_blocks must be 'all' or 0..{depth} (the encoder's depth), got "
                         f"{cfg.tune_blocks!r}")
    return k


def build_classifier(cfg: TrainConfig, num_classes: int) -> Classifier:
    """The model a fine-tuning run starts from: the pretrained encoder of ``cfg.pretrained``
    with a fresh head over ``num_classes``, frozen but for the last ``tune_blocks`` blocks."""
    encoder = open_encoder(cfg.pretrained)
    model = classifier_from_encoder(encoder, num_classes, cfg.global_pool, cfg.drop_path)
    freeze_blocks(model, tune_block_count(cfg, encoder.cfg.depth))
    return model


def layer_decay_groups(model: Classifier, weight_decay: float, layer_decay: float,
                       peak: float) -> list[dict]:
    """timm's layer-decay AdamW groups of the trainable parameters (no decay on 1-D parameters,
    i.e. biases and norms, nor on the cls token and positions), each group's ``lr`` set to
    ``peak * lr_scale``, so that a schedule scaling every group alike keeps the ratios."""
    groups = param_groups_layer_decay(model, weight_decay=weight_decay,
                                      no_weight_decay_list=model.no_weight_decay(),
                                      layer_decay=layer_decay)
    for g in groups:
        g["lr"] = peak * g["lr_scale"]
    return groups


class FinetuneLoss:
    """The fine-tuning loss of a micro-batch: mixup / cutmix soft targets (label smoothing
    included) and soft-target cross-entropy, or smoothed cross-entropy with both off."""

    def __init__(self, cfg: TrainConfig, num_classes: int):
        self.smoothing = cfg.label_smoothing
        self.mixup = None
        if cfg.mixup > 0 or cfg.cutmix > 0:
            self.mixup = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=MIXUP_PROB,
                               switch_prob=MIXUP_SWITCH_PROB, mode="batch",
                               label_smoothing=cfg.label_smoothing, num_classes=num_classes)
        self.soft = SoftTargetCrossEntropy()

    def __call__(self, model: torch.nn.Module, imgs: torch.Tensor, targets: StepTargets,
                 autocast) -> torch.Tensor:
        labels = torch.as_tensor(targets.labels).to(imgs.device, non_blocking=True)
        np.random.seed(targets.seed % 2**32)  # Mixup's draws: lam, mixup or cutmix, the box
        torch.manual_seed(targets.seed)  # drop path's
        if self.mixup is None:
            with autocast():
                return F.cross_entropy(model(imgs), labels, label_smoothing=self.smoothing)
        if len(imgs) % 2:
            raise ValueError(f"mixup / cutmix pair the images of a micro-batch: its size must be "
                             f"even, got {len(imgs)} (batch_size / (ranks x accum_steps))")
        imgs, soft = self.mixup(imgs, labels)  # [b, 3, S, S] mixed, [b, classes]
        with autocast():
            return self.soft(model(imgs), soft)


@torch.no_grad()
def top1_correct(model: torch.nn.Module, imgs: torch.Tensor, labels: torch.Tensor,
                 batch_size: int = 256) -> torch.Tensor:
    """[n] bool: whether the top-1 class of each image is its label (eval mode, mode restored);
    its mean is :func:`topk_evaluation`'s ``eval_top1`` on the same images."""
    device = next(model.parameters()).device
    with eval_mode(model):
        return torch.cat([model(x.to(device)).argmax(dim=1).cpu() == y
                          for x, y in zip(imgs.split(batch_size), labels.split(batch_size))])


@torch.no_grad()
def topk_evaluation(model: torch.nn.Module, imgs: torch.Tensor, labels: torch.Tensor,
                    batch_size: int = 256) -> dict[str, float]:
    """``eval_top1`` (and ``eval_top5`` when there are more than 5 classes) in [0, 1] and
    ``eval_loss`` (plain cross-entropy) on ``imgs`` / ``labels``; eval mode, mode restored."""
    device = next(model.parameters()).device
    hits = {1: 0, 5: 0}
    loss, count, classes = 0.0, 0, 0
    with eval_mode(model):
        for x, y in zip(imgs.split(batch_size), labels.split(batch_size)):
            logits, y = model(x.to(device)).float(), y.to(device)
            classes = logits.shape[1]
            top = logits.topk(min(5, classes), dim=1).indices  # [b, 5]
            hits[1] += int((top[:, 0] == y).sum())
            hits[5] += int((top == y[:, None]).any(dim=1).sum())
            loss += float(F.cross_entropy(logits, y, reduction="sum"))
            count += len(y)
    record = {"eval_top1": hits[1] / max(1, count), "eval_loss": loss / max(1, count)}
    if classes > 5:
        record["eval_top5"] = hits[5] / max(1, count)
    return record


def labelled_classes(data, name: str, num_classes: int | None) -> int:
    """The head's class count: ``num_classes`` or the data's, refusing data with fewer than two
    classes and a ``num_classes`` below the data's."""
    n = len(getattr(data, "classes", ()))
    if n < 2:
        raise ValueError(f"fine-tuning needs labelled images of at least 2 classes; {name!r} "
                         f"has {n} (an image folder: ROOT/<class>/<image>)")
    if num_classes is not None and num_classes < n:
        raise ValueError(f"num_classes {num_classes} is smaller than the {n} classes of "
                         f"{name!r}: labels {num_classes}..{n - 1} would have no output")
    return num_classes or n


def finetune_data(data, cfg: TrainConfig, world: int, main: bool):
    """The labelled training images of a fine-tuning run: the classes checked, the micro-batch
    even when mixup pairs it, and a class-balanced ``label_fraction`` subset (printed)."""
    labelled_classes(data, cfg.data, cfg.num_classes)
    micro = cfg.batch_size // (world * cfg.accum_steps)
    if (cfg.mixup > 0 or cfg.cutmix > 0) and micro % 2:
        raise ValueError(f"mixup / cutmix pair the images of each micro-batch: batch_size "
                         f"{cfg.batch_size} / ({world} rank(s) x accum_steps "
                         f"{cfg.accum_steps}) = {micro} must be even (or set mixup=0 cutmix=0)")
    if cfg.label_fraction >= 1:
        return data
    subset = LabelSubset(data, balanced_subset(data, cfg.label_fraction, cfg.seed))
    if main:
        print(f"[finetune] label_fraction {cfg.label_fraction}: {len(subset)} of {len(data)} "
              f"training images, per class {subset.class_counts()}", flush=True)
    return subset


def note_subset(root, data, cfg: TrainConfig, main: bool) -> None:
    """``label_subset.json`` in the run directory: the label fraction and the images of each
    class the run trains on (a run on every image writes none)."""
    if main and isinstance(data, LabelSubset):
        atomic_write_text(root / SUBSET_FILE, json.dumps(
            {"label_fraction": cfg.label_fraction, "seed": cfg.seed, "images": len(data),
             "of": len(data.base), "per_class": data.class_counts()}, indent=2))
