"""Masked reconstructions, as in MAE's Figures 2-4: masked input, reconstruction, and the
reconstruction with the visible patches of the original pasted back."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from ..core.config import check_mask_ratio, check_mask_strategy
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
    stats: str = "visible"  # un-normalisation: "visible" | "oracle" | "pixels" (plain-pixel model)


def to_display(imgs: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised [B, 3, H, W] -> display space: x·std + mean, clamped to [0, 1]."""
    return unnormalize(imgs)


PATCH_STATS = ("visible", "oracle")  # how a norm-pix model's predictions are un-normalised
NEIGHBOUR_SIGMA = 1.5  # patches: the reach of the visible neighbours' statistics


@lru_cache(maxsize=16)
def neighbour_weights(grid: int, sigma: float, dtype: torch.dtype,
                      device: torch.device) -> torch.Tensor:
    """[N, N] Gaussian weights exp(-d² / 2σ²) between the patches of a ``grid`` x ``grid`` image
    (d in patches). Cached: the slider recomputes the statistics at every move."""
    with torch.inference_mode(False):  # a plain tensor, whatever mode the first call ran in
        rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
        pos = torch.stack([rows.reshape(-1), cols.reshape(-1)], 1).to(device, dtype)  # [N, 2]
        return torch.exp(-torch.cdist(pos, pos) ** 2 / (2 * sigma ** 2))


def visible_patch_stats(target: torch.Tensor, mask: torch.Tensor, grid: int,
                        sigma: float = NEIGHBOUR_SIGMA) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance [B, N, 1] for every patch from *visible* patches only: a visible patch
    keeps its own; a masked one gets the Gaussian-weighted (``sigma`` patches) average of its
    visible neighbours' means and variances. ``target`` [B, N, p*p*C], ``mask`` [B, N] 1 = masked.
    No pixel of a masked patch enters any statistic."""
    mean = target.mean(dim=-1)  # [B, N]
    var = target.var(dim=-1)
    weight = neighbour_weights(grid, sigma, target.dtype, target.device)  # [N, N]
    visible = 1.0 - mask.to(target)  # [B, N]
    w = weight[None] * visible[:, None, :]  # [B, N, N]: patch n <- visible patch v
    w = w / w.sum(-1, keepdim=True).clamp_min(1e-12)
    near_mean = (w * mean[:, None, :]).sum(-1)
    near_var = (w * var[:, None, :]).sum(-1)
    hidden = mask.bool()
    return (torch.where(hidden, near_mean, mean)[..., None],
            torch.where(hidden, near_var, var)[..., None])


def unnormalize_patches(model, pred: torch.Tensor, imgs: torch.Tensor,
                        mask: torch.Tensor | None = None, stats: str = "visible") -> torch.Tensor:
    """Predicted patches [B, N, p*p*C] -> pixel patches (ImageNet-normalised space).

    A ``norm_pix_loss`` model predicts each patch normalised by its own mean and variance, so the
    prediction must be mapped back with some mean and variance: ``pixels = pred · sqrt(var +
    1e-6) + mean``.

    * ``stats="visible"`` (default): from the visible patches only (:func:`visible_patch_stats`;
      needs ``mask``): what the model could know. Nothing of a masked patch's truth enters.
    * ``stats="oracle"``: each patch's *true* mean and variance, as the official MAE
      visualisation does ("oracle patch statistics"): the masked patches' true colour and
      contrast leak into the picture, so even an untrained model seems to reconstruct.

    Models trained on plain pixels are returned unchanged.
    """
    if stats not in PATCH_STATS:
        raise ValueError(f"stats must be one of {PATCH_STATS}, got {stats!r}")
    if not model.cfg.norm_pix_loss:
        return pred
    target = model.patchify(imgs.float())
    if stats == "oracle":
        mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
    else:
        if mask is None:
            raise ValueError("stats='visible' needs the mask (1 = masked) to know what is visible")
        mean, var = visible_patch_stats(target, mask, model.cfg.grid_size)
    return pred.float() * (var + 1e-6) ** 0.5 + mean


@torch.no_grad()
def reconstruct(model, imgs: torch.Tensor, mask_ratio: float = 0.75,
                mask_strategy: str = "random", seed: int = 0, fill: float = 0.5,
                stats: str = "visible") -> Reconstruction:
    """Mask ``imgs`` [B, 3, H, W] (ImageNet-normalised) with a seeded mask and reconstruct them.

    Runs in eval mode without gradients (every submodule's mode is restored; the forward in
    inference mode, but no returned tensor is an inference tensor). All images come back in
    display space ([0, 1], un-normalised with the ImageNet statistics, clamped). For
    ``norm_pix_loss`` models each predicted patch is un-normalised with statistics from the
    visible patches (default), or with the true patch's (``stats="oracle"``, as the official MAE
    demo: the masked patches' mean colour and contrast then come from the original); see
    :func:`unnormalize_patches`. ``Reconstruction.stats`` says which.
    ``masked`` shows masked patches filled with the grey level ``fill``. The same ``seed`` gives
    the same mask; ``pasted`` equals ``original`` exactly on visible patches.
    """
    ratio = check_mask_ratio(mask_ratio)
    strategy = check_mask_strategy(mask_strategy)
    if not 0.0 <= fill <= 1.0:
        raise ValueError(f"fill must be a grey level in [0, 1], got {fill}")
    param = next(model.parameters())
    imgs = imgs.to(param.device, param.dtype)
    with eval_mode(model), torch.inference_mode():  # the rest: plain tensors, computed from it
        out = model(imgs, mask_ratio=ratio, mask_strategy=strategy, seed=seed)
    recon = model.unpatchify(unnormalize_patches(model, out.pred, imgs, out.mask, stats)
                             .to(imgs.dtype))
    p = model.cfg.patch_size
    g = model.cfg.grid_size
    pix = out.mask.reshape(-1, 1, g, g).repeat_interleave(p, 2).repeat_interleave(p, 3)  # [B,1,H,W]
    original = to_display(imgs)
    reconstruction = to_display(recon)
    hidden = pix.bool()
    masked = torch.where(hidden, torch.full_like(original, fill), original)
    pasted = torch.where(hidden, reconstruction, original)
    return Reconstruction(original=original, masked=masked, reconstruction=reconstruction,
                          pasted=pasted, mask=out.mask.clone(), loss=float(out.loss),
                          patch_mask=pix, stats=stats if model.cfg.norm_pix_loss else "pixels")


PICTURE_COLUMNS = ("original", "masked", "pasted")


@torch.no_grad()
def training_picture(model, imgs: torch.Tensor, seed: int = 0, scale: int = 4):
    """A PIL image, one row per image: original | masked (black) | reconstruction with the
    visible patches pasted back, at the model's own mask ratio and strategy (the reconstruction
    is :func:`reconstruct`'s, the picture :func:`workbench.core.pictures.compose_rows`'s, without
    gaps): what a training run saves in ``pictures/`` (``workbench.experiments.pretraining``
    hands it to the loop)."""
    from PIL import Image

    from ..core.pictures import compose_rows

    r = reconstruct(model, imgs, mask_ratio=model.cfg.mask_ratio,
                    mask_strategy=model.cfg.mask_strategy, seed=seed, fill=0.0)
    return Image.fromarray(compose_rows(r, range(imgs.shape[0]), scale=scale, pad=0,
                                        columns=PICTURE_COLUMNS))
