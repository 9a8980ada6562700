"""Fixed 2-D sine-cosine position embeddings, as in MAE (and MoCo v3).

Half of the channels encode the column coordinate and half the row coordinate; within each half,
the first quarter of channels are sines and the second quarter cosines of ``pos * omega_k`` with
``omega_k = 1 / 10000 ** (k / (D / 4))``. This is the layout of the official ``pos_embed.py``, so
our embeddings equal those stored in published checkpoints.
"""
from __future__ import annotations

import torch


def sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    """[M] positions -> [M, dim] embedding (sin half, then cos half)."""
    if dim % 2:
        raise ValueError(f"sin-cos embedding needs an even dimension, got {dim}")
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / 10000**omega  # [dim/2]
    out = pos.double().reshape(-1, 1) * omega.reshape(1, -1)  # [M, dim/2]
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def sincos_2d(dim: int, grid_size: int, cls_token: bool = True) -> torch.Tensor:
    """[1 (+1 if cls_token), grid_size**2, dim] float32; the cls position is all zeros."""
    if dim % 4:
        raise ValueError(f"2-D sin-cos embedding needs a dimension divisible by 4, got {dim}")
    coords = torch.arange(grid_size, dtype=torch.float64)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")  # [g, g] each, row-major tokens
    emb = torch.cat([sincos_1d(dim // 2, cols), sincos_1d(dim // 2, rows)], dim=1)  # [g*g, dim]
    if cls_token:
        emb = torch.cat([torch.zeros(1, dim, dtype=emb.dtype), emb], dim=0)
    return emb.float().unsqueeze(0)
