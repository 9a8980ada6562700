"""Typed settings for the models, with the papers' named presets.

Field names follow the official MAE code (``img_size``, ``patch_size``, ``embed_dim``, ...), so a
user who knows ``models_mae.py`` knows these. Every field can be overridden by keyword:

    cfg = model_config("mff", "vit-b", decoder_depth=4)
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .registry import Registry


@dataclass(frozen=True)
class ModelKind:
    """What a config and a size estimate need to know of a model kind, as plain data (its class,
    and torch, are not needed to check or size a config)."""

    has_fusion: bool  # the decoder reads a learned mix of several encoder layers (MFF)


# The model kinds: the one table of them. Configs are checked against it and the command line
# offers its names, without torch; each kind's class registers under the same name in
# workbench.models (MODEL_CLASSES, which refuses a name missing here or a class that disagrees).
MODEL_KINDS: Registry[ModelKind] = Registry("model kind", {
    "mae": ModelKind(has_fusion=False),  # He et al., CVPR 2022
    "mff": ModelKind(has_fusion=True),  # MFF-MAE, Liu et al., ICCV 2023
})
# The masking strategies, name -> what it masks: the one table of their names. Each one's score
# function registers under the same name in workbench.models.masking (MASK_SCORES).
MASK_STRATEGIES: Registry[str] = Registry("mask_strategy", {
    "random": "a uniform random subset of the patches (MAE)",
    "block": "rectangles of random area and aspect ratio (BEiT's block-wise masking)",
    "grid": "a regular lattice, one patch of every 2x2 at ratio 0.75 (MAE's grid-wise sampling)",
})
FUSION_PROJECTIONS = ("linear", "identity", "mlp")
# The data names a run takes besides an image folder, and the training augmentations (the data
# layer's, named here so that settings are checked without torch): "mae" is MAE's
# RandomResizedCrop(0.2-1) + flip, "resize-crop" a resize, reflect padding and a random crop.
BUILTIN_SETS = ("builtin", "shapes")
AUGMENTATIONS = ("mae", "resize-crop")

# Attention heads used by the published checkpoints for each encoder width (ViT-Ti/S/B/L/H).
PUBLISHED_HEADS = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16}


@dataclass
class ModelConfig:
    kind: str = "mae"  # a name in MODEL_KINDS: "mae" | "mff"
    # encoder (ViT)
    img_size: int = 32
    patch_size: int = 4
    in_chans: int = 3
    embed_dim: int = 192
    depth: int = 6
    num_heads: int = 3
    mlp_ratio: float = 4.0
    # every LayerNorm (encoder and decoder): 1e-6 as in official MAE / timm; Hugging Face's ViTMAE
    # files say 1e-12 in their config.json
    layer_norm_eps: float = 1e-6
    # decoder
    decoder_embed_dim: int = 128
    decoder_depth: int = 2
    decoder_num_heads: int = 4
    # objective
    norm_pix_loss: bool = True
    mask_ratio: float = 0.75
    mask_strategy: str = "random"  # a name in MASK_STRATEGIES: "random" | "block" | "grid"
    # ablation of MAE Table 1c: the encoder also sees mask tokens (and all N positions)
    mask_token_in_encoder: bool = False
    # MFF only
    # the encoder blocks the decoder reads; None: default_fuse_layers(depth), filled in when the
    # config is made (a fusing kind's config always holds the list)
    fuse_layers: list[int] | None = None
    fusion_proj: str = "linear"  # "linear" | "identity" | "mlp"

    def __post_init__(self) -> None:
        if self.fuse_layers is not None:
            self.fuse_layers = [int(i) for i in self.fuse_layers]
        validate(self)
        if self.fuse_layers is None and self.has_fusion:
            self.fuse_layers = default_fuse_layers(self.depth)

    @property
    def grid_size(self) -> int:
        return self.img_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2

    @property
    def has_fusion(self) -> bool:
        """Whether this kind's decoder reads a fusion of several layers (MODEL_KINDS)."""
        return MODEL_KINDS.get(self.kind).has_fusion

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def default_fuse_layers(depth: int) -> list[int]:
    """MFF's layer choice, generalised from ViT-B.

    The paper fuses the last block with M = 5 shallower ones, every second block from the first:
    [0, 2, 4, 6, 8, 11] for depth 12. For other depths the stride scales with depth,
    ``s = max(1, round(depth / 6))``, and the extra layers are ``0, s, 2s, ...`` (at most 5, all
    before the last block), then the last block: depth 24 → [0, 4, 8, 12, 16, 23],
    depth 6 → [0, 1, 2, 3, 4, 5].
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    stride = max(1, round(depth / 6))
    extra = [i * stride for i in range(5) if i * stride < depth - 1]
    return extra + [depth - 1]


def validate(cfg: ModelConfig) -> None:
    """Raise ValueError naming the first inconsistent setting."""
    check_model_kind(cfg.kind)
    for name in ("img_size", "patch_size", "in_chans", "embed_dim", "depth", "num_heads",
                 "decoder_embed_dim", "decoder_depth", "decoder_num_heads"):
        value = getattr(cfg, name)
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if cfg.img_size % cfg.patch_size:
        raise ValueError(
            f"img_size {cfg.img_size} is not divisible by patch_size {cfg.patch_size}")
    if cfg.embed_dim % cfg.num_heads:
        raise ValueError(f"embed_dim {cfg.embed_dim} is not divisible by num_heads {cfg.num_heads}")
    if cfg.decoder_embed_dim % cfg.decoder_num_heads:
        raise ValueError(f"decoder_embed_dim {cfg.decoder_embed_dim} is not divisible by "
                         f"decoder_num_heads {cfg.decoder_num_heads}")
    for name in ("embed_dim", "decoder_embed_dim"):
        if getattr(cfg, name) % 4:
            raise ValueError(f"{name} {getattr(cfg, name)} must be divisible by 4 for the 2-D "
                             f"sin-cos position embedding")
    if not isinstance(cfg.layer_norm_eps, (int, float)) or not 0 < cfg.layer_norm_eps < 1:
        raise ValueError(f"layer_norm_eps must be a number in (0, 1), got {cfg.layer_norm_eps!r}")
    check_mask_ratio(cfg.mask_ratio)
    check_mask_strategy(cfg.mask_strategy)
    if cfg.fusion_proj not in FUSION_PROJECTIONS:
        raise ValueError(f"fusion_proj must be one of {FUSION_PROJECTIONS}, got {cfg.fusion_proj!r}")
    if cfg.fuse_layers is not None:
        layers = cfg.fuse_layers
        bad = [i for i in layers if not 0 <= i < cfg.depth]
        if bad:
            raise ValueError(f"fuse_layers {bad} out of range for an encoder of depth {cfg.depth} "
                             f"(valid block indices: 0..{cfg.depth - 1})")
        if not layers or len(set(layers)) != len(layers) or sorted(layers) != layers:
            raise ValueError(f"fuse_layers must be a non-empty increasing list, got {layers}")
        if layers[-1] != cfg.depth - 1:
            raise ValueError(f"fuse_layers must end with the last block ({cfg.depth - 1}): MFF "
                             f"fuses shallower blocks into the encoder output, got {layers}")


def check_mask_ratio(mask_ratio: float) -> float:
    r = float(mask_ratio)
    if not 0.0 <= r < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    return r


def check_mask_strategy(strategy: str) -> str:
    MASK_STRATEGIES.get(strategy)  # ValueError listing the strategies' names
    return strategy


def check_model_kind(kind: str) -> str:
    MODEL_KINDS.get(kind)  # ValueError listing the model kinds
    return kind


# The papers' encoders (MAE Table / ViT paper): width, depth, heads; decoder 8 x 512 x 16 heads.
_PAPER_DECODER = dict(decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16)
PRESETS: dict[str, dict] = {
    # 3 M parameters, trains on a 2-core CPU in minutes (32 px photos, 8x8 patches of 4 px).
    "tiny": dict(img_size=32, patch_size=4, embed_dim=192, depth=6, num_heads=3,
                 decoder_embed_dim=128, decoder_depth=2, decoder_num_heads=4),
    # ViT-S encoder on 64 px images (8x8 patches of 8 px) with a 4 x 256 decoder: for a GPU run on
    # the built-in photos that is long enough for the fusion weights to settle (minutes on a GPU).
    "gpu-small": dict(img_size=64, patch_size=8, embed_dim=384, depth=12, num_heads=6,
                      decoder_embed_dim=256, decoder_depth=4, decoder_num_heads=8),
    "vit-s": dict(img_size=224, patch_size=16, embed_dim=384, depth=12, num_heads=6,
                  **_PAPER_DECODER),
    "vit-b": dict(img_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12,
                  **_PAPER_DECODER),
    "vit-l": dict(img_size=224, patch_size=16, embed_dim=1024, depth=24, num_heads=16,
                  **_PAPER_DECODER),
    # MAE's ViT-H uses 14 px patches (ViT-H/14), as in the released mae_pretrain_vit_huge.pth.
    "vit-h": dict(img_size=224, patch_size=14, embed_dim=1280, depth=32, num_heads=16,
                  **_PAPER_DECODER),
}


def model_config(kind: str = "mae", preset: str = "tiny", **overrides) -> ModelConfig:
    """The preset's settings with ``overrides`` applied; unknown names are an error."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    names = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise TypeError(f"unknown model setting(s) {unknown}; valid names: {sorted(names - {'kind'})}")
    return ModelConfig(**{**PRESETS[preset], **overrides, "kind": kind})
