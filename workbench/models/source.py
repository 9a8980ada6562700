"""What a loaded model came from: the checkpoint file, its layout and the settings read off it
(:func:`workbench.checkpoints.load_checkpoint` fills it in, ``model.checkpoint_info`` returns it).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..core.config import ModelConfig


@dataclass
class CheckpointInfo:
    path: str
    layout: str  # a name in checkpoints.LAYOUTS: "workbench" | "mae-official" | "mmpretrain" | ...
    config: ModelConfig
    has_decoder: bool
    step: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        c = self.config
        out = {"path": self.path, "layout": self.layout, "kind": c.kind,
               "img_size": c.img_size, "patch_size": c.patch_size, "embed_dim": c.embed_dim,
               "depth": c.depth, "num_heads": c.num_heads, "has_decoder": self.has_decoder,
               "norm_pix_loss": c.norm_pix_loss, "layer_norm_eps": c.layer_norm_eps,
               "step": self.step}
        if self.has_decoder:
            out.update(decoder_embed_dim=c.decoder_embed_dim, decoder_depth=c.decoder_depth,
                       decoder_num_heads=c.decoder_num_heads)
        if c.has_fusion:
            out["fuse_layers"] = c.fuse_layers
        return {**out, **self.extra}
