"""MFF-MAE (Liu et al., ICCV 2023): the decoder reads a learned mix of several encoder layers.

    fused = sum_i softmax(w)_i * P_i(f_i),   decoder input = norm(fused)

``f_i`` are block outputs before the final norm, ``P_i`` a projection per fused layer (identity
for the last one), ``w`` the fusion logits, equal at the start. Matches mmpretrain's ``MFFViT``.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..core.config import ModelConfig
from .kinds import model_class
from .mae import MaskedAutoencoder
from .source import CheckpointInfo


def make_projection(kind: str, dim: int) -> nn.Module:
    if kind == "identity":
        return nn.Identity()
    if kind == "linear":
        return nn.Linear(dim, dim)
    return nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))  # "mlp"


class MultiLevelFusion(nn.Module):
    """Weighted average of projected layer features; weights are a softmax over ``logits``."""

    def __init__(self, layers: list[int], dim: int, proj: str = "linear"):
        super().__init__()
        self.layers = list(layers)
        # one projection per fused layer but the last, which enters as it is
        self.projections = nn.ModuleList(make_projection(proj, dim) for _ in self.layers[:-1])
        self.logits = nn.Parameter(torch.ones(len(self.layers)))  # equal: uniform weights

    @staticmethod
    def normalise(logits: torch.Tensor) -> torch.Tensor:
        """fusion logits [L] -> normalised weights [L] (fp32), summing to 1."""
        return F.softmax(logits.float(), dim=0)

    def weights(self) -> torch.Tensor:
        """[L] normalised weights, summing to 1."""
        return self.normalise(self.logits)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """every block output [B, T, D] -> fused [B, T, D]"""
        picked = [features[i] for i in self.layers]
        projected = [p(f) for p, f in zip(self.projections, picked[:-1])] + [picked[-1]]
        w = self.weights().to(projected[-1].dtype)
        return torch.einsum("l,lbtd->btd", w, torch.stack(projected))


@model_class("mff")
class MFFMaskedAutoencoder(MaskedAutoencoder):
    has_fusion = True

    def __init__(self, cfg: ModelConfig, has_decoder: bool = True,
                 source: CheckpointInfo | None = None):
        super().__init__(cfg, has_decoder=has_decoder, source=source)
        self.fusion = MultiLevelFusion(cfg.fuse_layers, cfg.embed_dim, cfg.fusion_proj)
        self.fusion.apply(self._init_module)  # Xavier-uniform, zero bias

    @property
    def fuse_layers(self) -> list[int]:
        return list(self.fusion.layers)

    def fusion_weights(self) -> torch.Tensor:
        """[L] normalised fusion weights (detached), one per fused layer, summing to 1."""
        return self.fusion.weights().detach()

    def decoder_input(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.norm(self.fusion(features))
