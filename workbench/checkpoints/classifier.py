"""The fine-tuned classifier: a timm ``VisionTransformer`` made from a pretrained encoder, as
MAE's ``main_finetune.py`` makes it, and read back from a fine-tuning run.

:func:`classifier_from_encoder` takes any encoder :func:`load_checkpoint` gives (ours, official
MAE, mmpretrain MFF, Hugging Face, timm): its weights in timm's key names (:func:`export_timm`)
go into a :class:`Classifier` with drop path, global average pooling + ``fc_norm`` (the official
default: the pretrained final norm is dropped and ``fc_norm`` starts fresh) or the cls token
through the pretrained norm, and a new head drawn from trunc_normal(std 2e-5) with zero bias.
MFF's fusion and any decoder are left behind: MFF fine-tunes the plain encoder.
:func:`freeze_blocks` is partial fine-tuning (MAE Fig. 9). :func:`load_classifier` reads a run
directory, its ``checkpoint.pt`` or its ``model.safetensors``; that file is in timm's key names,
so ``timm.create_model(**timm_create_args(model), checkpoint_path=...)`` loads it too.
"""
from __future__ import annotations

import json
import os
from functools import partial
from pathlib import Path

import torch
import torch.nn as nn
from timm.models.vision_transformer import VisionTransformer

from ..core.config import ModelConfig
from ..core.io import checkpoint_path
from ..models import MaskedAutoencoder
from .files import CheckpointError, read_safetensors, write_safetensors
from .loading import read_checkpoint
from .weights import export_timm

HEAD_INIT_STD = 2e-5  # main_finetune.py: trunc_normal_(model.head.weight, std=2e-5)
GLOBAL_POOLS = ("avg", "token")  # mean of the patch tokens + fc_norm (official) | cls token
CLASSIFIER_FORMAT = "mim-workbench-classifier"  # model.safetensors metadata
# timm's names of the ViTs it builds at 224 px: (patch, width, depth, heads) -> name
TIMM_VITS = {(16, 192, 12, 3): "vit_tiny_patch16_224", (16, 384, 12, 6): "vit_small_patch16_224",
             (16, 768, 12, 12): "vit_base_patch16_224", (16, 1024, 24, 16): "vit_large_patch16_224",
             (14, 1280, 32, 16): "vit_huge_patch14_224", (8, 768, 12, 12): "vit_base_patch8_224"}
TIMM_BY_WIDTH = {192: "vit_tiny_patch16_224", 384: "vit_small_patch16_224",
                 768: "vit_base_patch16_224", 1024: "vit_large_patch16_224",
                 1280: "vit_huge_patch14_224"}


class Classifier(VisionTransformer):
    """A timm ``VisionTransformer`` (its modules, key names and forward) that remembers the
    encoder settings it was made from (``cfg``), as the training loop and checkpoints expect,
    and groups its parameters by the official layer-decay rule (:meth:`group_matcher`)."""

    has_fusion = False
    has_decoder = False

    def __init__(self, cfg: ModelConfig, num_classes: int, global_pool: str = "avg",
                 drop_path: float = 0.0):
        if global_pool not in GLOBAL_POOLS:
            raise ValueError(f"global_pool must be one of {GLOBAL_POOLS}, got {global_pool!r}")
        super().__init__(img_size=cfg.img_size, patch_size=cfg.patch_size, in_chans=cfg.in_chans,
                         num_classes=num_classes, global_pool=global_pool,
                         embed_dim=cfg.embed_dim, depth=cfg.depth, num_heads=cfg.num_heads,
                         mlp_ratio=cfg.mlp_ratio, qkv_bias=True, drop_path_rate=drop_path,
                         norm_layer=partial(nn.LayerNorm, eps=cfg.layer_norm_eps))
        self.cfg = cfg

    def group_matcher(self, coarse: bool = False) -> dict:
        """Layer ids for ``timm.optim.param_groups_layer_decay``, by MAE's rule
        (``util/lr_decay.py``): patch / cls / pos embedding 0, block i i + 1, everything after
        the blocks (norm, fc_norm, head) depth + 1. timm's own matcher puts the final ``norm``
        with the last block (depth), a smaller lr than the official one for the cls-token head."""
        return dict(stem=r"^cls_token|^pos_embed|^patch_embed",
                    blocks=[(r"^blocks\.(\d+)", None)])

    @property
    def num_classes_out(self) -> int:
        return self.head.out_features


def classifier_from_encoder(encoder: MaskedAutoencoder, num_classes: int,
                            global_pool: str = "avg", drop_path: float = 0.0) -> Classifier:
    """A :class:`Classifier` with ``encoder``'s weights (patch embedding, cls token, positions,
    blocks; the final norm for the cls-token head) and a fresh head (trunc_normal std 2e-5, bias
    0). Draws the new weights from the global torch generator."""
    model = Classifier(encoder.cfg, num_classes, global_pool, drop_path)
    sd = export_timm(encoder)  # timm's key names
    if global_pool == "avg":  # official: the pretrained norm is dropped, fc_norm starts fresh
        sd = {k: v for k, v in sd.items() if not k.startswith("norm.")}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    new = {"head.weight", "head.bias"} | ({"fc_norm.weight", "fc_norm.bias"}
                                          if global_pool == "avg" else set())
    if set(missing) != new or unexpected:
        raise CheckpointError(f"the encoder does not fit a timm VisionTransformer: missing "
                              f"{sorted(set(missing) - new)}, unexpected {sorted(unexpected)}")
    nn.init.trunc_normal_(model.head.weight, std=HEAD_INIT_STD)
    nn.init.zeros_(model.head.bias)
    return model


def trainable_prefixes(depth: int, tune_blocks: int) -> tuple[str, ...]:
    """Parameter name prefixes that train when only the last ``tune_blocks`` blocks do (with the
    final norm / fc_norm and the head); every name trains at ``tune_blocks == depth``."""
    if tune_blocks >= depth:
        return ("",)
    return ("norm.", "fc_norm.", "head.", *(f"blocks.{i}." for i in range(depth - tune_blocks,
                                                                          depth)))


def freeze_blocks(model: Classifier, tune_blocks: int) -> list[str]:
    """Partial fine-tuning: ``requires_grad`` off for all but the last ``tune_blocks`` blocks,
    the final norm / fc_norm and the head (0: those alone). Returns the frozen names."""
    keep = trainable_prefixes(model.cfg.depth, tune_blocks)
    frozen = []
    for name, p in model.named_parameters():
        if not name.startswith(keep):
            p.requires_grad_(False)
            frozen.append(name)
    return frozen


def timm_name(cfg: ModelConfig) -> str | None:
    """timm's name of this architecture at 224 px (``vit_base_patch16_224``, ...), None when it
    has none (e.g. the tiny preset: 32 px, 4 px patches, 6 blocks)."""
    if cfg.img_size != 224 or cfg.mlp_ratio != 4.0 or cfg.in_chans != 3:
        return None
    return TIMM_VITS.get((cfg.patch_size, cfg.embed_dim, cfg.depth, cfg.num_heads))


def timm_create_args(model: Classifier) -> dict:
    """Keyword arguments of ``timm.create_model`` that build this classifier's architecture:
    its timm name with pool and class count, or for an architecture without a name the name of
    its width with the differing dimensions overridden (timm's constructors accept them)."""
    cfg = model.cfg
    args = dict(num_classes=model.num_classes_out, global_pool=model.global_pool)
    name = timm_name(cfg)
    if name is not None:
        return dict(model_name=name, **args)
    base = TIMM_BY_WIDTH.get(cfg.embed_dim, "vit_base_patch16_224")
    return dict(model_name=base, img_size=cfg.img_size, patch_size=cfg.patch_size,
                in_chans=cfg.in_chans, embed_dim=cfg.embed_dim, depth=cfg.depth,
                num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio, **args)


def save_classifier(model: Classifier, path: str | os.PathLike, **info) -> None:
    """The classifier's weights in timm's key names as one ``.safetensors`` file (atomic), with
    its settings (and ``info``, e.g. class names, step) in the metadata."""
    meta = {"format": CLASSIFIER_FORMAT, "config": json.dumps(model.cfg.to_dict()),
            "global_pool": model.global_pool, "num_classes": str(model.num_classes_out),
            "timm_name": timm_name(model.cfg) or "", "info": json.dumps(info)}
    write_safetensors(model.state_dict(), path, metadata=meta)


def classifier_from_state(cfg: ModelConfig, sd: dict[str, torch.Tensor]) -> Classifier:
    """A :class:`Classifier` shaped by ``sd`` (class count from the head, the pooling from
    ``fc_norm``) with its weights, eval mode."""
    if "head.weight" not in sd:
        raise CheckpointError("no classifier head (head.weight) in the weights: not a fine-tuned "
                              "model; load_checkpoint reads pretrained encoders")
    pool = "avg" if "fc_norm.weight" in sd else "token"
    model = Classifier(cfg, int(sd["head.weight"].shape[0]), pool)
    model.load_state_dict(sd)
    return model.eval()


def load_classifier(path: str | os.PathLike, map_location: str | torch.device = "cpu"
                    ) -> Classifier:
    """A fine-tuned classifier (a timm ``VisionTransformer``, eval mode) from a fine-tuning run
    directory (its ``model.safetensors``, else ``checkpoint.pt``) or either file."""
    path = Path(path)
    if path.is_dir() and (path / "model.safetensors").exists():
        path = path / "model.safetensors"
    path = checkpoint_path(path)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") != CLASSIFIER_FORMAT:
            raise CheckpointError(f"{path} is not a fine-tuned classifier (metadata format "
                                  f"{meta.get('format')!r}, expected {CLASSIFIER_FORMAT!r})")
        cfg, sd = ModelConfig.from_dict(json.loads(meta["config"])), read_safetensors(path)
    else:
        ck = read_checkpoint(path, map_location="cpu")
        if "config" not in ck or "model" not in ck:
            raise CheckpointError(f"{path} is not a fine-tuning run's checkpoint")
        cfg, sd = ModelConfig.from_dict(ck["config"]), ck["model"]
    return classifier_from_state(cfg, sd).to(map_location)
