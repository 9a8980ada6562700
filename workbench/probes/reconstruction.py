"""Masked reconstructions, as in MAE's Figures 2-4: masked input, reconstruction, and the
reconstruction with the visible patches of the original pasted back."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import check_mask_ratio, check_mask_strategy
from ..data import IMAGENET_MEAN, IMAGENET_STD, unnormalize  # noqa: F401 - re-exported
from ..models import eval_mode


@dataclass
class Reconstruction:
    original: torch.Tensor  # [B, 3, H, W] display space [0, 1]
    masked: torch.Tensor  # [B, 3, H, W] original with masked patches filled with ``fill``
    reconstruction: torch.Tensor  # [B, 3, H, W] the decoder's prediction of every patch
    pasted: torch.Tensor  # [B, 3, H, W] reconstruction on masked patches, original elsewhere
    mask: torch.Tensor  # [B, N] 1 = masked
    loss: float  # the model's loss on this batch (MSE on masked patches, its own targets)
    patch_mask: torch.Tensor  # [B, 1, H, W] the mask at pixel resolution (1 = masked)


def to_display(imgs: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised [B, 3, H, W] -> display space: x·std + mean, clamped to [0, 1]."""
    return unnormalize(imgs)


def unnormalize_patches(model, pred: torch.Tensor, imgs: torch.Tensor) -> torch.Tensor:
    """Predicted patches [B, N, p*p*C] -> pixel patches (ImageNet-normalised space).

    For a ``norm_pix_loss`` model the decoder predicts each patch normalised by its own mean and
    variance, so the prediction is mapped back with the statistics of the *true* patch, as in the
    official MAE visualisation: ``pixels = pred · sqrt(var + 1e-6) + mean``, where mean and var
    (unbiased, as in the loss) are taken over the p*p*C values of the original patch. Other models
    predict pixels directly and are returned unchanged.
    """
    if not model.cfg.norm_pix_loss:
        return pred
    target = model.patchify(imgs.float())
    mean = target.mean(dim=-1, keepdim=True)
    var = target.var(dim=-1, keepdim=True)
    return pred.float() * (var + 1e-6) ** 0.5 + mean


@torch.no_grad()
def reconstruct(model, imgs: torch.Tensor, mask_ratio: float = 0.75,
                mask_strategy: str = "random", seed: int = 0, fill: float = 0.5) -> Reconstruction:
    """Mask ``imgs`` [B, 3, H, W] (ImageNet-normalised) with a seeded mask and reconstruct them.

    Runs in eval mode without gradients (the model's mode is restored). All images come back in
    display space ([0, 1], un-normalised with the ImageNet statistics, clamped). For
    ``norm_pix_loss`` models each predicted patch is un-normalised with the mean and variance of
    the true patch (see :func:`unnormalize_patches`) -- so the reconstruction borrows each masked
    patch's mean colour and contrast from the original, exactly as the official MAE demo does.
    ``masked`` shows masked patches filled with the grey level ``fill``. The same ``seed`` gives
    the same mask; ``pasted`` equals ``original`` exactly on visible patches.
    """
    ratio = check_mask_ratio(mask_ratio)
    strategy = check_mask_strategy(mask_strategy)
    if not 0.0 <= fill <= 1.0:
        raise ValueError(f"fill must be a grey level in [0, 1], got {fill}")
    with eval_mode(model):
        param = next(model.parameters())
        imgs = imgs.to(param.device, param.dtype)
        out = model(imgs, mask_ratio=ratio, mask_strategy=strategy, seed=seed)
    recon = model.unpatchify(unnormalize_patches(model, out.pred, imgs).to(imgs.dtype))
    p = model.cfg.patch_size
    g = model.cfg.grid_size
    pix = out.mask.reshape(-1, 1, g, g).repeat_interleave(p, 2).repeat_interleave(p, 3)  # [B,1,H,W]
    original = to_display(imgs)
    reconstruction = to_display(recon)
    hidden = pix.bool()
    masked = torch.where(hidden, torch.full_like(original, fill), original)
    pasted = torch.where(hidden, reconstruction, original)
    return Reconstruction(original=original, masked=masked, reconstruction=reconstruction,
                          pasted=pasted, mask=out.mask, loss=float(out.loss), patch_mask=pix)
