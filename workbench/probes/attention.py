"""Self-attention maps of the encoder and three summaries of them, as in Park, Kim, Heo, Kim & Yun
(ICLR 2023, "What do self-supervised vision transformers learn?", code: naver-ai/cl-vs-mim).

:func:`attention_maps` reads the softmaxed attention of the model's own timm ``Attention``
modules (no second implementation): for the call, each block's ``attn.fused_attn`` is set to
False so timm computes ``softmax(q k^T * scale)`` explicitly and passes it through
``attn.attn_drop`` (the identity in eval mode), where a forward hook captures it; flags and
hooks are restored afterwards.

The summaries read patch-to-patch attention: the cls query and key are dropped and each query
row is renormalised to sum to 1 (p(k | q) over the N = g*g patches). Per head they return the
mean over queries and images (``per_image=True`` keeps the image axis: [B, heads]):

* :func:`attention_distance` -- mean attention distance in pixels (Dosovitskiy et al. 2021,
  Fig. 7; cl-vs-mim): sum_k p(k|q) * patch_size * ||pos(q) - pos(k)||_2, grid positions of
  patch centres (a query attending to itself contributes distance 0).
* :func:`attention_entropy` -- -sum_k p(k|q) log p(k|q) in nats.
* :func:`attention_nmi` -- normalised mutual information between query and key position,
  cl-vs-mim's ``calculate_nmi``: queries uniform, p(q) = 1/N, joint p(q, k) = p(q) p(k|q),
  key marginal p(k) = mean_q p(k|q);
  NMI = I(Q; K) / sqrt(H(Q) H(K)), I(Q; K) = sum_{q,k} p(q) p(k|q) log(p(k|q) / p(k)),
  H(Q) = log N, H(K) = -sum_k p(k) log p(k). 1 when every query attends only to itself (a
  permutation), 0 when all queries share one distribution ("attention collapse"; also defined
  as 0 when every query attends to one and the same key, H(K) = 0).
  cl-vs-mim adds 1e-8 to the map before renormalising to avoid log 0; here 0 log 0 = 0 exactly
  (``torch.xlogy``), a negligible difference for maps without exact zeros.
All summaries are computed in float64.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..models import eval_mode
from .linear import FEATURE_BATCH


def _check_blocks(model) -> None:
    for i, blk in enumerate(model.blocks):
        attn = getattr(blk, "attn", None)
        if not (hasattr(attn, "fused_attn") and hasattr(attn, "attn_drop")):
            raise TypeError(f"block {i} has no timm Attention (with fused_attn and attn_drop); "
                            f"attention_maps reads timm's unfused attention path")


def _capture_maps(model, x: torch.Tensor) -> list[torch.Tensor]:
    """One encoder forward at mask ratio 0 -> per block the softmaxed attention [b, H, T, T]."""
    maps: dict[int, torch.Tensor] = {}
    saved, handles = [], []
    try:
        for i, blk in enumerate(model.blocks):
            saved.append((blk.attn, "fused_attn" in vars(blk.attn), blk.attn.fused_attn))
            blk.attn.fused_attn = False

            def grab(_m, args, i=i):
                maps[i] = args[0].detach()  # [b, H, T, T] softmax(q k^T * scale)

            handles.append(blk.attn.attn_drop.register_forward_pre_hook(grab))
        model.layer_features(x, mask_ratio=0.0)
    finally:
        for h in handles:
            h.remove()
        for attn, own, flag in saved:
            if own:
                attn.fused_attn = flag
            else:
                del attn.fused_attn
    return [maps[i] for i in range(len(model.blocks))]


@torch.no_grad()
def attention_maps(model, imgs: torch.Tensor, batch_size: int = FEATURE_BATCH
                   ) -> list[torch.Tensor]:
    """Softmaxed self-attention of every encoder block at mask ratio 0, eval mode, no grad:
    list over blocks of [B, heads, T, T] float32 CPU tensors (T = 1 + patches, cls first, patches
    in raster order; rows are queries and sum to 1), taken from the model's own timm blocks."""
    if imgs.ndim != 4 or imgs.shape[0] == 0:
        raise ValueError(f"expected images [B, C, H, W] with B >= 1, got {list(imgs.shape)}")
    _check_blocks(model)
    device = next(model.parameters()).device
    chunks: list[list[torch.Tensor]] = [[] for _ in model.blocks]
    with eval_mode(model):
        for start in range(0, imgs.shape[0], batch_size):
            maps = _capture_maps(model, imgs[start:start + batch_size].to(device))
            for store, m in zip(chunks, maps):
                store.append(m.float().cpu())
    return [torch.cat(c) for c in chunks]


def patch_conditional(attn: torch.Tensor, has_cls: bool = True) -> torch.Tensor:
    """[..., H, T, T] attention -> [..., H, N, N] p(k | q) over patches, float64: the cls query
    and key dropped (``has_cls``) and every row renormalised to sum to 1."""
    if attn.ndim < 3 or attn.shape[-1] != attn.shape[-2]:
        raise ValueError(f"expected attention [..., heads, T, T], got shape {list(attn.shape)}")
    p = attn.double()
    p = p[..., 1:, 1:] if has_cls else p
    if p.shape[-1] == 0:
        raise ValueError("no patch tokens left after dropping the cls token")
    total = p.sum(dim=-1, keepdim=True)
    if (total <= 0).any():
        raise ValueError("a query puts no attention on any patch (cls only); cannot renormalise")
    return p / total


def _mean_images(per_head: torch.Tensor, per_image: bool) -> torch.Tensor:
    """[..., H] -> [H] mean over all leading (image) axes, or unchanged if ``per_image``."""
    if per_image or per_head.ndim == 1:
        return per_head
    return per_head.reshape(-1, per_head.shape[-1]).mean(dim=0)


def _reduce(per_query: torch.Tensor, per_image: bool) -> torch.Tensor:
    """[B, H, N] (or [H, N]) -> [H] mean over queries and images ([B, H] if per_image)."""
    return _mean_images(per_query.mean(dim=-1), per_image)


def patch_distances(grid_size: int, patch_size: float) -> torch.Tensor:
    """[N, N] Euclidean distance in pixels between patch centres of a g x g raster grid."""
    idx = torch.arange(grid_size, dtype=torch.float64)
    pos = torch.stack(torch.meshgrid(idx, idx, indexing="ij"), -1).reshape(-1, 2)  # [N, 2]
    return torch.cdist(pos, pos) * patch_size


def attention_distance(attn: torch.Tensor, grid_size: int, patch_size: float,
                       has_cls: bool = True, per_image: bool = False) -> torch.Tensor:
    """Mean attention distance in pixels per head [heads] (see the module docstring) of
    attention [B, heads, T, T] on a ``grid_size`` x ``grid_size`` grid of ``patch_size`` pixels."""
    p = patch_conditional(attn, has_cls)  # [B, H, N, N]
    if p.shape[-1] != grid_size * grid_size:
        raise ValueError(f"{p.shape[-1]} patch tokens, but a {grid_size}x{grid_size} grid has "
                         f"{grid_size * grid_size}")
    dist = patch_distances(grid_size, patch_size)  # [N, N]
    return _reduce((p * dist).sum(dim=-1), per_image)


def attention_entropy(attn: torch.Tensor, has_cls: bool = True,
                      per_image: bool = False) -> torch.Tensor:
    """Entropy in nats of each query's patch attention, mean per head [heads]: 0 when a query
    attends to one patch, log N when uniform over N patches."""
    p = patch_conditional(attn, has_cls)  # [B, H, N, N]
    return _reduce(-torch.xlogy(p, p).sum(dim=-1), per_image)


def attention_nmi(attn: torch.Tensor, has_cls: bool = True,
                  per_image: bool = False) -> torch.Tensor:
    """Normalised mutual information between query and key position per head [heads],
    cl-vs-mim's definition (module docstring): I(Q; K) / sqrt(H(Q) H(K)), uniform queries."""
    p = patch_conditional(attn, has_cls)  # [B, H, N, N] p(k|q)
    n = p.shape[-1]
    if n < 2:
        raise ValueError("NMI needs at least two patches (H(Q) = log N = 0 otherwise)")
    pk = p.mean(dim=-2, keepdim=True)  # [B, H, 1, N] p(k) with p(q) = 1/N
    ratio = torch.where(p > 0, p / pk, torch.ones_like(p))  # p(k|q) / p(k); pk > 0 where p > 0
    mi = (p * torch.log(ratio)).sum(dim=(-2, -1)) / n  # [B, H] I(Q; K)
    hk = -torch.xlogy(pk, pk).sum(dim=(-2, -1))  # [B, H] H(K)
    denom = torch.sqrt(math.log(n) * hk)
    nmi = torch.where(hk > 0, mi / denom.clamp_min(1e-300), torch.zeros_like(mi))  # [B, H]
    return _mean_images(nmi, per_image)


@dataclass
class AttentionStatistics:
    """Per encoder block and head, over ``n_images`` images: mean attention distance (pixels),
    entropy (nats) and NMI, each [L, H]."""

    distance: np.ndarray
    entropy: np.ndarray
    nmi: np.ndarray
    n_images: int
    grid_size: int
    patch_size: int

    def to_dict(self) -> dict:
        return {"distance_px": self.distance.tolist(), "entropy_nats": self.entropy.tolist(),
                "nmi": self.nmi.tolist(), "n_images": self.n_images,
                "grid_size": self.grid_size, "patch_size": self.patch_size}


def attention_statistics(model, imgs: torch.Tensor, batch_size: int = FEATURE_BATCH
                         ) -> AttentionStatistics:
    """The three summaries of every block's attention maps (:func:`attention_maps`) on ``imgs``,
    per head: cl-vs-mim's depth-wise view of MAE vs MFF-MAE."""
    maps = attention_maps(model, imgs, batch_size)  # L x [B, H, T, T]
    grid, patch = model.cfg.grid_size, model.cfg.patch_size
    rows = [(attention_distance(a, grid, patch), attention_entropy(a), attention_nmi(a))
            for a in maps]  # each [H]
    distance, entropy, nmi = (np.stack([r[i].numpy() for r in rows]) for i in range(3))
    return AttentionStatistics(distance, entropy, nmi, int(imgs.shape[0]), grid, patch)
