"""The supervised objective (``TrainConfig(objective="supervised")``): MFF's multi-level fusion
inside a ViT trained with labels instead of pixel reconstruction -- MFF's supervised comparison
(finding 4). The paper reports that a supervised ViT puts most of the fusion weight on the last
layer, the opposite of MAE, whose weights move toward shallow layers.

:class:`FusionClassifier` is the model: MFF's encoder and fusion with one linear layer on the
normed, mean-pooled fused tokens (exactly what MFF's decoder reads). The loop trains it as it
trains an autoencoder -- the same batches, AdamW groups, schedule, checkpoints, resume, DDP and
``metrics.jsonl`` with the fusion weights -- and only the step's loss (:func:`supervised_loss`)
and the final held-out measurement (:func:`heldout_classification`) differ.
``workbench.experiments.supervised`` runs the comparison for a pretraining run.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..core.config import ModelConfig
from ..models import eval_mode
from ..models.mff import MFFMaskedAutoencoder


class FusionClassifier(nn.Module):
    """MFF's encoder and fusion, with a linear head on the normed, mean-pooled fused tokens.

    ``cfg`` is the MFF model's settings, as a run's ``config.json`` and checkpoint record them.
    The backbone keeps a one-block decoder (``decoder_depth`` 0 would not build, and its
    initialisation draws keep the head's the same as ever); the decoder is never called and is
    frozen, so AdamW and DDP see only what the loss reaches."""

    has_fusion = True
    has_decoder = False  # a checkpoint of it holds no pixel decoder worth loading

    def __init__(self, cfg: ModelConfig, num_classes: int):
        super().__init__()
        self.cfg = cfg
        self.backbone = MFFMaskedAutoencoder(dataclasses.replace(
            cfg, decoder_depth=1, decoder_embed_dim=32, decoder_num_heads=1))
        self.head = nn.Linear(cfg.embed_dim, num_classes)
        for name, p in self.backbone.named_parameters():
            if name.startswith(("decoder", "mask_token")):
                p.requires_grad_(False)

    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        """[B, 3, S, S] -> logits [B, classes]; every patch visible (mask ratio 0)."""
        enc = self.backbone.forward_encoder(imgs, 0.0)
        fused = self.backbone.decoder_input(enc.features)  # norm(Σ softmax(w)_i P_i(f_i)) [B, 1+N, D]
        return self.head(fused[:, 1:].mean(dim=1))

    def fusion_weights(self) -> torch.Tensor:
        return self.backbone.fusion_weights()

    @property
    def fuse_layers(self) -> list[int]:
        return self.backbone.fuse_layers

    def no_weight_decay(self) -> set[str]:
        return self.backbone.no_weight_decay()


def class_count(data, name: str) -> int:
    """The number of classes of the opened training ``data`` (named ``name``); refuses fewer
    than two, which a classifier cannot learn from."""
    n = len(getattr(data, "classes", ()))
    if n < 2:
        raise ValueError(f"supervised fusion needs at least 2 classes, {name!r} has {n}")
    return n


def supervised_loss(model: nn.Module, imgs: torch.Tensor, labels: torch.Tensor,
                    label_smoothing: float) -> torch.Tensor:
    """Cross-entropy (with ``label_smoothing``) of the classifier's logits against ``labels``."""
    return F.cross_entropy(model(imgs), labels, label_smoothing=label_smoothing)


@torch.no_grad()
def heldout_classification(model: FusionClassifier, imgs: torch.Tensor, labels: torch.Tensor,
                           label_smoothing: float, batch_size: int = 512) -> dict[str, float]:
    """``heldout_accuracy`` in [0, 1] and ``heldout_loss`` (the training objective, label
    smoothing included) on ``imgs`` / ``labels``; eval mode, no grad, mode restored."""
    device = next(model.parameters()).device
    correct, loss, count = 0, 0.0, 0
    with eval_mode(model):
        for x, y in zip(imgs.split(batch_size), labels.split(batch_size)):
            logits = model(x.to(device))
            y = y.to(device)
            correct += int((logits.argmax(-1) == y).sum())
            loss += float(F.cross_entropy(logits, y, label_smoothing=label_smoothing)) * len(y)
            count += len(y)
    return {"heldout_accuracy": correct / max(1, count), "heldout_loss": loss / max(1, count)}
