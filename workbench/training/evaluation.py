"""What a run measures on its fixed held-out images at the end: the objective's loss (and, for
the supervised objective, the accuracy). Reconstruction pictures are drawn by the
hook the caller passes (:class:`workbench.training.TrainHooks`)."""
from __future__ import annotations

import torch

from ..models import MaskedAutoencoder, eval_mode
from .settings import TrainConfig
from .supervised import heldout_classification


@torch.no_grad()
def evaluate(model: MaskedAutoencoder, imgs: torch.Tensor, mask_ratio: float = 0.75,
             seed: int = 0, batch_size: int = 256) -> float:
    """Masked-reconstruction loss on ``imgs`` with fixed masks (chunk ``i`` uses ``seed + i``);
    eval mode, no grad, mode restored."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    with eval_mode(model):
        for i, chunk in enumerate(imgs.split(batch_size)):
            out = model(chunk.to(device), mask_ratio=mask_ratio, seed=seed + i)
            total += float(out.loss) * len(chunk)
            count += len(chunk)
    return total / max(1, count)


def final_evaluation(model: torch.nn.Module, cfg: TrainConfig, imgs: torch.Tensor,
                     labels: torch.Tensor, heldout: bool = True) -> dict[str, float]:
    """The last record's held-out numbers: ``heldout_loss`` (the masked loss at the model's
    ratio; for the supervised objective the cross-entropy, and ``heldout_accuracy``). Without
    held-out images (``heldout`` False: training images stood in) the loss is logged as
    ``train_images_loss`` and the accuracy as ``train_images_accuracy``. Fine-tuning's are
    ``eval_top1``, ``eval_top5`` (more than 5 classes) and ``eval_loss`` (``train_images_top1``,
    ... without held-out images)."""
    if cfg.objective == "finetune":
        from .finetune import topk_evaluation

        record = topk_evaluation(model, imgs, labels)
        return record if heldout else {k.replace("eval_", "train_images_"): v
                                       for k, v in record.items()}
    if cfg.objective == "supervised":
        record = heldout_classification(model, imgs, labels, cfg.label_smoothing)
    else:
        record = {"heldout_loss": evaluate(model, imgs, mask_ratio=model.cfg.mask_ratio,
                                           seed=cfg.seed)}
    return record if heldout else {k.replace("heldout_", "train_images_"): v
                                   for k, v in record.items()}


def finite_weights(model: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())
