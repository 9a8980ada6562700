"""Checkpoint layouts: read a file, say which layout it is in, convert it, build the model.

``load_checkpoint(path)`` recognises five layouts and returns a ready model:

* ``workbench`` -- our own files: ``{"format": "mim-workbench", "config", "model", ...}``;
* ``mae-official`` -- facebookresearch/mae ``mae_pretrain_vit_*.pth`` / ``mae_visualize_vit_*.pth``:
  ``{"model": state_dict, ["optimizer", "epoch", "scaler", "args"]}``, with or without decoder;
* ``mmpretrain`` -- mmpretrain MAE / MFF: ``{"meta", "state_dict"}`` with ``backbone.`` and
  ``neck.`` keys (MFF adds ``backbone.proj_layers.*`` and ``backbone.proj_weights``);
* ``timm`` -- a plain timm ``VisionTransformer`` state dict (encoder only), also as the hub's
  ``.safetensors`` (``timm/vit_*_patch16_224.mae``);
* ``huggingface`` -- transformers' ``ViTMAEForPreTraining`` / ``ViTMAEModel``: a
  ``save_pretrained`` directory (config.json + model.safetensors or pytorch_model.bin), in the
  hub's or transformers 5's key names (converter in :mod:`workbench.checkpoints.hf`).

``path`` may also be a hub name (``facebook/vit-mae-base``) already in the local Hugging Face
cache; nothing is ever downloaded.

As in timm, loading is read -> :func:`detect_layout` -> the layout's converter (one function per
source layout, registered in :data:`LAYOUTS`; each returns the state dict in official-MAE key
names, the :class:`ModelConfig` and whether the file holds a decoder) -> build -> load.

PyTorch files are read with ``torch.load(weights_only=True)`` (``argparse.Namespace`` allowed for
the official ``args``): a file that would run code when unpickled is refused, never executed;
``.safetensors`` files hold tensors only.
Dimensions are inferred from the tensors; published head counts are used for published widths.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from ..core.config import MODEL_KINDS, PUBLISHED_HEADS, ModelConfig, default_fuse_layers
from ..core.io import atomic_save, atomic_write, checkpoint_path
from ..models import MaskedAutoencoder, MultiLevelFusion, model_from_config
from ..core.registry import Registry
from ..core.sizes import TooLarge, check_model_fits

FORMAT = "mim-workbench"
FORMAT_VERSION = 1

# Key prefixes of the encoder as a timm VisionTransformer (official MAE names): what export_timm
# writes.
TIMM_ENCODER_KEYS = ("cls_token", "pos_embed", "patch_embed.", "blocks.", "norm.")
# Key prefixes of the decoder: absent from encoder-only files (mae_pretrain_vit_*, timm).
DECODER_KEYS = ("mask_token", "decoder_embed.", "decoder_pos_embed", "decoder_blocks.",
                "decoder_norm.", "decoder_pred.")

# A converter: (checkpoint dict, the caller's model overrides) -> (state dict in official-MAE key
# names, the model's config, whether the file holds decoder weights).
Converter = Callable[[dict, dict], "tuple[dict[str, torch.Tensor], ModelConfig, bool]"]
# workbench.checkpoints.hf registers the "huggingface" converter (imported on the first lookup)
LAYOUTS: Registry[Converter] = Registry("checkpoint layout", source="workbench.checkpoints.hf")
# Key prefixes only transformers' ViTMAE has (ViTMAEForPreTraining, ViTMAEModel).
HF_KEYS = ("vit.embeddings.", "embeddings.patch_embeddings.")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or does not fit the model; the message says why."""


@dataclass
class CheckpointInfo:
    path: str
    layout: str  # a name in LAYOUTS: "workbench" | "mae-official" | "mmpretrain" | "timm" | ...
    config: ModelConfig
    has_decoder: bool
    step: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        c = self.config
        out = {"path": self.path, "layout": self.layout, "model": c.kind,
               "img_size": c.img_size, "patch_size": c.patch_size, "embed_dim": c.embed_dim,
               "depth": c.depth, "num_heads": c.num_heads, "has_decoder": self.has_decoder,
               "norm_pix_loss": c.norm_pix_loss, "layer_norm_eps": c.layer_norm_eps,
               "step": self.step}
        if self.has_decoder:
            out.update(decoder_embed_dim=c.decoder_embed_dim, decoder_depth=c.decoder_depth,
                       decoder_num_heads=c.decoder_num_heads)
        if MODEL_KINDS.get(c.kind).has_fusion:
            out["fused_layers"] = c.fused_layers
        return {**out, **self.extra}


# ------------------------------------------------------------------------------- reading
def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                    mmap: bool = False) -> dict:
    """A checkpoint as a dict, with errors that say what is wrong. ``path``: a PyTorch file
    (safely unpickled), a ``.safetensors`` file, a Hugging Face ``save_pretrained`` directory or
    hub snapshot, or a hub name found in the local cache. ``mmap``: a PyTorch file's tensors are
    memory-mapped, not read (for a look at its settings without loading the weights)."""
    from . import hf

    path = Path(path)
    if not path.exists() and hf.is_hub_name(str(path)):
        path = hf.hub_snapshot(str(path))
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    folder = path if path.is_dir() else path.parent
    obj = read_file(hf.weights_file(path) if path.is_dir() else path, map_location, mmap)
    if _has_hf_keys(obj) and (config := hf.read_hf_config(folder)) is not None:
        return {"hf_config": config, "hf_weights": obj}  # the settings beside the weights
    return obj


def _has_hf_keys(sd: dict) -> bool:
    return any(isinstance(k, str) and k.startswith(HF_KEYS) for k in sd)


def read_file(path: Path, map_location: str | torch.device = "cpu", mmap: bool = False) -> dict:
    """One checkpoint file: ``.safetensors``, or a PyTorch pickle read weights-only (its tensors
    memory-mapped with ``mmap``)."""
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): was it still being written?")
    if path.suffix == ".safetensors":
        return read_safetensors(path, map_location)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as e:  # noqa: BLE001 - re-raised with the reason
        text = str(e)
        detail = _loader_detail(text)
        if re.search(r"\bGLOBAL\b|Unsupported global", detail):
            raise CheckpointError(
                f"refused to load {path}: it contains pickled objects other than tensors and "
                f"plain containers, which could run code when unpickled; only weights-only "
                f"files are accepted ({detail})") from e
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint (truncated or "
                              f"corrupt?): {type(e).__name__}: {detail}") from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a checkpoint dict")
    return obj


def read_safetensors(path: Path, map_location: str | torch.device = "cpu") -> dict:
    """A ``.safetensors`` file (tensors only, nothing to unpickle) as a state dict; one of ours
    (:func:`save_weights`: the config in its metadata) as a checkpoint dict of our layout."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    device = map_location if isinstance(map_location, str) else str(torch.device(map_location))
    try:
        sd = load_file(path, device=device)
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # noqa: BLE001 - re-raised with the reason
        raise CheckpointError(f"{path} is not a readable safetensors file (truncated or "
                              f"corrupt?): {type(e).__name__}: {e}") from e
    if meta.get("format") != FORMAT:
        return sd
    try:
        return {"format": FORMAT, "version": int(meta["version"]), "model": sd,
                "config": json.loads(meta["config"]), "has_decoder": meta["has_decoder"] == "1",
                "step": int(meta["step"]) if meta.get("step", "") != "" else None}
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{path} says it is a {FORMAT} file but its metadata is incomplete "
                              f"({type(e).__name__}: {e}); keys found: {sorted(meta)}") from e


def write_safetensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike,
                      metadata: dict[str, str] | None = None) -> None:
    """``tensors`` as a ``.safetensors`` file (contiguous CPU copies, PyTorch metadata as the
    hub's files have, plus ``metadata``), written atomically."""
    from safetensors.torch import save

    data = save({k: v.contiguous().cpu() for k, v in tensors.items()},
                metadata={"format": "pt", **(metadata or {})})
    atomic_write(path, lambda f: f.write(data))


def save_weights(model: MaskedAutoencoder, path: str | os.PathLike, step: int | None = None,
                 dtype: torch.dtype | None = None) -> None:
    """The model's weights and config as one ``.safetensors`` file of our layout (no optimizer
    state, nothing pickled): a run's initialisation (``init.safetensors``) and the weights the
    project ships. :func:`load_checkpoint` reads it back exactly; with ``dtype`` (e.g.
    ``torch.float16``, to halve a shipped file) the floating tensors are stored rounded to it and
    load back as the model's float32 of those rounded values."""
    sd = {k: v.to(dtype) if dtype is not None and v.is_floating_point() else v
          for k, v in model.state_dict().items()}
    write_safetensors(sd, path, metadata={
        "format": FORMAT, "version": str(FORMAT_VERSION), "config": json.dumps(model.cfg.to_dict()),
        "has_decoder": "1" if model.has_decoder else "0", "step": "" if step is None else str(step)})


def _loader_detail(text: str) -> str:
    """The informative paragraph of torch.load's error, without its generic advice."""
    skip = ("Weights only load failed", "Check the documentation", "Please file an issue")
    parts = [p.strip() for p in text.split("\n\n") if p.strip()]
    kept = [p for p in parts if not p.startswith(skip)]
    return " ".join(kept) or (parts[0] if parts else "")


def detect_layout(obj: dict) -> str:
    """Which of the :data:`LAYOUTS` a checkpoint dict is in (the first rule that fits)."""
    if obj.get("format") == FORMAT:
        return "workbench"
    if "hf_config" in obj or _has_hf_keys(obj):
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
        value = cfg.fused_layers if name == "fuse_layers" else getattr(cfg, name)
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
        held["fuse_layers"] = (logits.numel(), lambda c: len(c.fused_layers) if
                               MODEL_KINDS.get(c.kind).has_fusion else logits.numel(),
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


# ------------------------------------------------------------------------------- loading
def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                    **overrides) -> MaskedAutoencoder:
    """Build the model a checkpoint describes and load its weights (eval mode).

    ``path`` is a checkpoint file (PyTorch or ``.safetensors``), a training run directory (its
    ``checkpoint.pt``), a Hugging Face ``save_pretrained`` directory, or a hub name such as
    ``facebook/vit-mae-base`` in the local Hugging Face cache (never downloaded).
    ``overrides`` set model fields the file cannot tell (e.g. ``num_heads`` for an unpublished
    width, ``fuse_layers`` for an MFF file, ``norm_pix_loss``). ``model.checkpoint_info`` says
    what was loaded; an encoder-only file gives a model whose ``has_decoder`` is False.
    """
    path = checkpoint_path(path)
    obj = read_checkpoint(path, map_location)
    layout = detect_layout(obj)
    sd, cfg, has_decoder = LAYOUTS.get(layout)(obj, overrides)
    try:  # the size, from the settings alone, before a block is built
        check_model_fits(cfg, map_location, f"the model {path} describes")
    except TooLarge as e:
        raise CheckpointError(str(e)) from e
    info = _describe(obj, sd, str(path), layout, cfg, has_decoder)
    model = model_from_config(cfg, has_decoder=has_decoder, source=info)
    load_state(model, sd, layout)
    return model.to(map_location).eval()


def _describe(obj: dict, sd: dict[str, torch.Tensor], path: str, layout: str,
              cfg: ModelConfig, has_decoder: bool) -> CheckpointInfo:
    """What a loaded file holds: its layout, settings, training step and fusion weights."""
    extra = {}
    if MODEL_KINDS.get(cfg.kind).has_fusion and "fusion.logits" in sd:
        weights = MultiLevelFusion.normalise(sd["fusion.logits"])
        extra["fusion_weights"] = [round(float(w), 4) for w in weights]
    step = obj.get("step", obj.get("epoch"))
    return CheckpointInfo(path, layout, cfg, has_decoder,
                          int(step) if isinstance(step, (int, float)) else None, extra)


def load_state(model: MaskedAutoencoder, sd: dict[str, torch.Tensor], layout: str) -> None:
    """Load ``sd`` into ``model``; any missing, unexpected or mis-shaped key is an error (decoder
    keys are not needed by a model built with ``has_decoder=False``)."""
    own = model.state_dict()
    unexpected = sorted(k for k in sd if k not in own)
    needed = [k for k in own if model.has_decoder or not k.startswith(DECODER_KEYS)]
    missing = sorted(k for k in needed if k not in sd)
    if missing or unexpected:
        raise CheckpointError(
            f"{layout} checkpoint does not match a {model.cfg.kind.upper()} model with "
            f"depth {model.cfg.depth}, width {model.cfg.embed_dim}: "
            f"missing keys {_short(missing)}; unexpected keys {_short(unexpected)}")
    bad = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
           for k, v in sd.items() if tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        raise CheckpointError(f"{layout} checkpoint has tensors of the wrong shape: "
                              + "; ".join(bad[:8]) + (" ..." if len(bad) > 8 else ""))
    model.load_state_dict(sd, strict=False)


def _short(keys: list[str], n: int = 10) -> str:
    return "[]" if not keys else str(keys[:n])[:-1] + (f", ... ({len(keys)} in all)]"
                                                       if len(keys) > n else "]")


# ------------------------------------------------------------------------------- writing
def checkpoint_dict(model: MaskedAutoencoder, **extra: Any) -> dict:
    """Our layout: the config and weights, plus whatever training state ``extra`` holds."""
    return {"format": FORMAT, "version": FORMAT_VERSION, "config": model.cfg.to_dict(),
            "has_decoder": model.has_decoder, "model": model.state_dict(), **extra}


def save_checkpoint(model: MaskedAutoencoder, path: str | os.PathLike, **extra: Any) -> None:
    atomic_save(checkpoint_dict(model, **extra), path)


def export_timm(model: MaskedAutoencoder, path: str | os.PathLike | None = None
                ) -> dict[str, torch.Tensor]:
    """The encoder as a timm ``VisionTransformer`` state dict (class token, final norm, no head):
    ``timm.create_model("vit_base_patch16_224", num_classes=0).load_state_dict(sd)``. With
    ``path`` it is also written there: ``.safetensors`` (as on the hub) or a PyTorch file."""
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()
          if k.startswith(TIMM_ENCODER_KEYS)}
    if path is not None and Path(path).suffix == ".safetensors":
        write_safetensors(sd, path)
    elif path is not None:
        atomic_save(sd, path)
    return sd


def load_models(paths: dict[str, str | os.PathLike], map_location: str | torch.device = "cpu"
                ) -> dict[str, MaskedAutoencoder]:
    """Several checkpoints by name, e.g. ``{"MAE": mae_path, "MFF-MAE": mff_path}`` ->
    ``{name: model}``, each loaded by :func:`load_checkpoint` (eval mode), in the given order."""
    return {name: load_checkpoint(path, map_location) for name, path in paths.items()}
