"""Checkpoint layouts: which one a checkpoint dict is in, and each one's converter to our keys.

A converter (one function per source layout, registered in :data:`LAYOUTS`) returns the state
dict in official-MAE key names, the :class:`ModelConfig` and whether the file holds a decoder.
Dimensions are inferred from the tensors; published head counts are used for published widths;
every setting is checked against what the tensors fix before a model is built. The Hugging Face
converter lives in :mod:`workbench.checkpoints.hf`, which registers it here when imported (as
:mod:`workbench.checkpoints.loading` does).
"""
from __future__ import annotations

import math
import re
from typing import Any, Callable

import torch

from ..core.config import PUBLISHED_HEADS, ModelConfig, default_fuse_layers
from ..core.registry import Registry
from .files import FORMAT, CheckpointError

# Key prefixes of the decoder: absent from encoder-only files (mae_pretrain_vit_*, timm).
DECODER_KEYS = ("mask_token", "decoder_embed.", "decoder_pos_embed", "decoder_blocks.",
                "decoder_norm.", "decoder_pred.")

# A converter: (checkpoint dict, the caller's model overrides) -> (state dict in official-MAE key
# names, the model's config, whether the file holds decoder weights).
Converter = Callable[[dict, dict], "tuple[dict[str, torch.Tensor], ModelConfig, bool]"]
# layout name -> its converter, in the order detect_layout tries them; .hf adds "huggingface"
LAYOUTS: Registry[Converter] = Registry("checkpoint layout")
# Key prefixes only transformers' ViTMAE has (ViTMAEForPreTraining, ViTMAEModel).
HF_KEYS = ("vit.embeddings.", "embeddings.patch_embeddings.")


def has_hf_keys(sd: dict) -> bool:
    """Whether a state dict has transformers' ViTMAE key names."""
    return any(isinstance(k, str) and k.startswith(HF_KEYS) for k in sd)


def detect_layout(obj: dict) -> str:
    """Which of the :data:`LAYOUTS` a checkpoint dict is in (the first rule that fits)."""
    if obj.get("format") == FORMAT:
        return "workbench"
    if "hf_config" in obj or has_hf_keys(obj):
        return "huggingface"
    if isinstance(obj.get("state_dict"), dict) and any(
            k.startswith(("backbone.", "neck.")) for k in obj["state_dict"]):
        return "mmpretrain"
    sd = obj.get("model") if isinstance(obj.get("model"), dict) else obj
    if any(k.startswith("patch_embed.proj.") for k in sd):
        if "model" in obj or any(k.startswith(DECODER_KEYS) for k in sd):
            return "mae-official"
        return "timm"
    keys = sorted(obj)[:12]
    raise CheckpointError(
        "unrecognised checkpoint layout: expected a MIM Workbench checkpoint, an official MAE "
        "file ('model' with patch_embed.proj.*), an mmpretrain file ('state_dict' with backbone./"
        "neck. keys), a timm ViT state dict or a Hugging Face ViTMAE file (vit.embeddings.* "
        f"keys); top-level keys found: {keys}")


# ------------------------------------------------------------------------------- converters
@LAYOUTS.register("workbench")
def convert_workbench(obj: dict, overrides: dict):
    """Our own files: the config is stored, the keys are already ours."""
    cfg = ModelConfig.from_dict({**obj["config"], **overrides})
    has_decoder = bool(obj.get("has_decoder", True))
    check_weights_agree(cfg, obj["model"], has_decoder, "workbench",
                        claims_of(cfg, overrides, "the file's config"))
    return obj["model"], cfg, has_decoder


@LAYOUTS.register("mmpretrain")
def convert_mmpretrain(obj: dict, overrides: dict):
    """mmpretrain MAE / MFF: rename ``backbone.`` / ``neck.`` keys, infer the settings."""
    sd = mmpretrain_to_official(obj["state_dict"])
    cfg, has_decoder = infer_config(sd, "mmpretrain", obj.get("args"), **overrides)
    check_weights_agree(cfg, sd, has_decoder, "mmpretrain", claims_of(cfg, overrides))
    return sd, cfg, has_decoder


@LAYOUTS.register("mae-official")
def convert_mae_official(obj: dict, overrides: dict):
    """facebookresearch/mae files: our key names already; ``args`` says norm_pix_loss."""
    return _convert_vit(obj, "mae-official", overrides)


@LAYOUTS.register("timm")
def convert_timm(obj: dict, overrides: dict):
    """A timm ViT state dict: the official encoder names; the classifier head is dropped."""
    return _convert_vit(obj, "timm", overrides)


def _convert_vit(obj: dict, layout: str, overrides: dict):
    # mae-official / timm: the same key names; a classifier head is not ours to load
    sd = obj["model"] if isinstance(obj.get("model"), dict) else obj
    sd = {k: v for k, v in sd.items() if not k.startswith(("head.", "head_drop."))}
    if "fc_norm.weight" in sd:
        raise CheckpointError("this ViT pools with fc_norm (global average pooling); only "
                              "class-token ViTs with a final norm are supported")
    cfg, has_decoder = infer_config(sd, layout, obj.get("args"), **overrides)
    check_weights_agree(cfg, sd, has_decoder, layout, claims_of(cfg, overrides))
    return sd, cfg, has_decoder


# ------------------------------------------------------------------------------- vs the weights
# Every converter compares the settings it will build from (a config.json, a stored config, the
# caller's overrides) with what the tensors themselves fix, before a model is built: a file whose
# config says ten million blocks while its weights hold two is refused in one line instead of
# building ten million blocks. (mae-official, timm and mmpretrain take their dimensions from the
# shapes, so there only overrides can disagree; their args / meta set no dimension.)
Claims = Callable[[str], str]  # a setting's name -> what says it, "config.json says depth=12"


def claims_of(cfg: ModelConfig, overrides: dict, source: str = "the settings read from the file",
              said: Claims | None = None) -> Claims:
    """How a message names each setting's source: an override as such, the rest by ``said``
    (default: "<source> says <name>=<value>")."""
    def claim(name: str) -> str:
        if name in overrides:
            return f"the override {name}={overrides[name]!r}"
        if said is not None:
            return said(name)
        value = getattr(cfg, name)
        return f"{source} says {name}={value!r}"
    return claim


def _block_indices(sd: dict, prefix: str) -> list[int]:
    return sorted({int(m.group(1)) for k in sd
                   if (m := re.match(rf"{re.escape(prefix)}(\d+)\.", k))})


def _held_blocks(sd: dict, prefix: str, what: str) -> int:
    """How many ``prefix``N. blocks the weights hold; numbering with gaps is an error (a file
    with blocks 0 and 9999999 does not hold ten million blocks)."""
    idx = _block_indices(sd, prefix)
    if idx and idx != list(range(len(idx))):
        shown = idx if len(idx) <= 6 else [*idx[:3], "...", *idx[-2:]]
        raise CheckpointError(f"the weights hold {len(idx)} {what} blocks numbered {shown}, not "
                              f"0..{len(idx) - 1}: blocks are missing, the file is incomplete "
                              f"or corrupt")
    return len(idx)


def held_by_weights(sd: dict, has_decoder: bool) -> dict[str, tuple[Any, Callable, str]]:
    """The settings the tensors fix: ``{setting: (value, how to read it off a config, what a
    message says the weights hold)}``, for what the file has."""
    held: dict[str, tuple[Any, Callable, str]] = {}
    plain = lambda name: lambda c: getattr(c, name)  # noqa: E731 - a table of one-liners
    w = sd.get("patch_embed.proj.weight")
    if isinstance(w, torch.Tensor) and w.ndim == 4:
        shape = f"patch_embed.proj.weight {list(w.shape)}"
        dim, chans, patch = w.shape[0], w.shape[1], w.shape[-1]
        held["embed_dim"] = (dim, plain("embed_dim"), f"width {dim} ({shape})")
        held["in_chans"] = (chans, plain("in_chans"), f"{chans} input channels ({shape})")
        held["patch_size"] = (patch, plain("patch_size"), f"{patch} px patches ({shape})")
        pos = sd.get("pos_embed")
        grid = math.isqrt(pos.shape[1] - 1) if isinstance(pos, torch.Tensor) and pos.ndim == 3 \
            and pos.shape[1] > 1 else 0
        if grid and grid * grid == pos.shape[1] - 1:
            held["img_size"] = (grid * patch, plain("img_size"),
                                f"{grid}x{grid} patches of {patch} px, {grid * patch} px images "
                                f"(pos_embed {list(pos.shape)})")
    depth = _held_blocks(sd, "blocks.", "encoder")
    held["depth"] = (depth, plain("depth"), f"{depth} encoder blocks")
    fc1 = sd.get("blocks.0.mlp.fc1.weight")
    if isinstance(fc1, torch.Tensor) and fc1.ndim == 2:
        held["mlp_ratio"] = (fc1.shape[0], lambda c: int(c.embed_dim * c.mlp_ratio),
                             f"an MLP of {fc1.shape[0]} hidden units (blocks.0.mlp.fc1.weight "
                             f"{list(fc1.shape)})")
    de = sd.get("decoder_embed.weight")
    if has_decoder and isinstance(de, torch.Tensor) and de.ndim == 2:
        held["decoder_embed_dim"] = (de.shape[0], plain("decoder_embed_dim"),
                                     f"decoder width {de.shape[0]} (decoder_embed.weight "
                                     f"{list(de.shape)})")
        n = _held_blocks(sd, "decoder_blocks.", "decoder")
        held["decoder_depth"] = (n, plain("decoder_depth"), f"{n} decoder blocks")
    logits = sd.get("fusion.logits")
    if isinstance(logits, torch.Tensor):
        held["fuse_layers"] = (logits.numel(), lambda c: len(c.fuse_layers) if
                               c.has_fusion else logits.numel(),
                               f"fusion weights for {logits.numel()} layers (fusion.logits)")
    return held


def check_weights_agree(cfg: ModelConfig, sd: dict, has_decoder: bool, layout: str,
                        claim: Claims) -> None:
    """Refuse, before anything is built, settings the tensors contradict (block counts, widths,
    patch and image size, MLP width, fused layers), naming each disagreement in one line:
    "config.json says num_hidden_layers=10000000 but the weights hold 2 encoder blocks"."""
    problems = [f"{claim(name)} but the weights hold {text}"
                for name, (value, wanted, text) in held_by_weights(sd, has_decoder).items()
                if wanted(cfg) != value]
    if problems:
        raise CheckpointError(f"{layout} checkpoint contradicts itself: " + "; ".join(problems)
                              + ". Nothing was built; correct the setting (or drop the override) "
                                "to match the weights")


# ------------------------------------------------------------------------------- key names
# mmpretrain prefix -> official MAE prefix, first match wins; ``True``: a transformer block, whose
# index is kept and whose sub-layer names are renamed by _MM_BLOCK
_MM_PREFIXES = [("backbone.layers.", "blocks.", True),
                ("backbone.patch_embed.projection.", "patch_embed.proj.", False),
                ("backbone.ln1.", "norm.", False),
                ("backbone.proj_layers.", "fusion.projections.", False),
                ("backbone.", "", False),
                ("neck.decoder_blocks.", "decoder_blocks.", True),
                ("neck.ln1.", "decoder_norm.", False),
                ("neck.", "", False)]
_MM_BLOCK = [("ln1.", "norm1."), ("ln2.", "norm2."), ("ffn.layers.0.0.", "mlp.fc1."),
             ("ffn.layers.1.", "mlp.fc2.")]


def _rename(name: str, table) -> str:
    for old, new, *_ in table:
        if name.startswith(old):
            return new + name[len(old):]
    return name


def _mm_to_official_name(key: str) -> str:
    for old, new, block in _MM_PREFIXES:
        if key.startswith(old):
            rest = key[len(old):]
            if block:  # "3.ln1.weight" -> "3.norm1.weight"
                idx, tail = rest.split(".", 1)
                rest = f"{idx}.{_rename(tail, _MM_BLOCK)}"
            return new + rest
    return key  # left for the unexpected-key check


def mmpretrain_to_official(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """mmpretrain MAE / MFF keys -> official MAE keys (+ ``fusion.*`` for MFF)."""
    out = {}
    for k, v in sd.items():
        if k.startswith("data_preprocessor."):
            continue  # mean / std buffers of mmpretrain's preprocessor, not model weights
        if k == "backbone.proj_weights":  # [L, 1, 1, 1] fusion logits
            out["fusion.logits"] = v.reshape(-1)
        else:
            out[_mm_to_official_name(k)] = v
    return out


def _count_blocks(sd: dict, prefix: str) -> int:
    idx = {int(m.group(1)) for k in sd if (m := re.match(rf"{re.escape(prefix)}(\d+)\.", k))}
    return max(idx) + 1 if idx else 0


def _need(sd: dict, key: str, layout: str) -> torch.Tensor:
    if key not in sd:
        raise CheckpointError(f"{layout} checkpoint is missing key {key!r}; "
                              f"keys present start with {sorted({k.split('.')[0] for k in sd})}")
    return sd[key]


def infer_config(sd: dict[str, torch.Tensor], layout: str, args: Any = None,
                 **overrides) -> tuple[ModelConfig, bool]:
    """Model settings from tensor shapes (official-MAE key names), plus ``overrides``."""
    w = _need(sd, "patch_embed.proj.weight", layout)  # [D, C, p, p]
    pos = _need(sd, "pos_embed", layout)  # [1, 1+N, D]
    dim, in_chans, patch = w.shape[0], w.shape[1], w.shape[-1]
    grid = math.isqrt(pos.shape[1] - 1)
    if grid * grid != pos.shape[1] - 1:
        raise CheckpointError(f"pos_embed has {pos.shape[1]} positions: expected 1 (cls) + a "
                              f"square number of patches")
    depth = _count_blocks(sd, "blocks.")
    mlp_ratio = _need(sd, "blocks.0.mlp.fc1.weight", layout).shape[0] / dim
    cfg: dict[str, Any] = dict(img_size=grid * patch, patch_size=patch, in_chans=in_chans,
                               embed_dim=dim, depth=depth, mlp_ratio=mlp_ratio,
                               num_heads=PUBLISHED_HEADS.get(dim, max(1, dim // 64)))
    has_decoder = "decoder_embed.weight" in sd
    if has_decoder:
        ddim = sd["decoder_embed.weight"].shape[0]
        cfg.update(decoder_embed_dim=ddim, decoder_depth=_count_blocks(sd, "decoder_blocks."),
                   decoder_num_heads=16 if ddim == 512 else max(1, ddim // 32))
    if args is not None:  # the official run's argparse.Namespace
        if hasattr(args, "norm_pix_loss"):
            cfg["norm_pix_loss"] = bool(args.norm_pix_loss)
        if hasattr(args, "mask_ratio"):
            cfg["mask_ratio"] = float(args.mask_ratio)
    elif "norm_pix_loss" not in overrides:
        # released visualisation weights predict plain (ImageNet-normalised) pixels
        cfg["norm_pix_loss"] = False
    if "fusion.logits" in sd:
        n_fused = sd["fusion.logits"].numel()
        cfg["kind"] = "mff"
        cfg["fusion_proj"] = "linear" if n_fused == 1 or "fusion.projections.0.weight" in sd \
            else "mlp" if "fusion.projections.0.0.weight" in sd else "identity"
        if "fuse_layers" not in overrides and len(default_fuse_layers(depth)) != n_fused:
            raise CheckpointError(
                f"the checkpoint fuses {n_fused} layers but the default rule for depth {depth} "
                f"gives {default_fuse_layers(depth)}; pass fuse_layers=[...] to say which")
    cfg.update(overrides)
    try:
        return ModelConfig(**cfg), has_decoder
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"settings inferred from the checkpoint do not form a valid model: "
                              f"{e}") from e
