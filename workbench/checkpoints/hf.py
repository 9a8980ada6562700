"""Hugging Face ViTMAE checkpoints: read ``save_pretrained`` files, find hub names in the local
cache, export back.

transformers' ``ViTMAEForPreTraining`` (and the encoder alone, ``ViTMAEModel``) computes exactly
what our MAE computes, under other names. Its tensors come in these spellings:

* the hub's (transformers 4, every file on the hub): ``vit.encoder.layer.N.attention.attention.
  {query,key,value}``, ``attention.output.dense``, ``intermediate.dense``, ``output.dense``;
  decoder blocks ``decoder.decoder_layers.N.`` with the same sub-layer names;
* transformers 5's modules (``model.state_dict()``): ``vit.layers.N.attention.{q,k,v,o}_proj``,
  ``mlp.fc1``, ``mlp.fc2``;
* what transformers 5 (5.24) ``save_pretrained`` writes: the hub's names, except decoder blocks
  ``decoder.decoder_encoder.layer.N.`` (its reverse renaming of ``encoder.layer.`` -> ``layers.``).

All are read; the separate q / k / v are stacked into timm's fused ``qkv``. The settings come
from ``config.json`` (dimensions, ``mask_ratio``, ``norm_pix_loss``, ``layer_norm_eps``: 1e-12 in
the hub's files, 1e-6 in official MAE). :func:`export_hf` writes the names of the hub's own files
(tested: transformers 5.24 loads them with the same outputs). Nothing here downloads: a hub name
is looked up in the local cache.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch

from ..core.config import ModelConfig
from ..core.io import atomic_write_text
from ..models import MaskedAutoencoder
from ..models.masking import Masking, masking_from_scores, num_kept
from .files import CheckpointError, write_safetensors
from .layouts import LAYOUTS, check_weights_agree, claims_of, infer_config

HF_CONFIG = "config.json"
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")  # save_pretrained's file names
HF_MODEL_TYPE = "vit_mae"

# Outside the blocks: transformers name (encoder without its "vit." prefix) -> official MAE name.
_TOP = [("embeddings.cls_token", "cls_token"), ("embeddings.position_embeddings", "pos_embed"),
        ("embeddings.patch_embeddings.projection.", "patch_embed.proj."), ("layernorm.", "norm."),
        ("decoder.mask_token", "mask_token"), ("decoder.decoder_pos_embed", "decoder_pos_embed"),
        ("decoder.decoder_embed.", "decoder_embed."), ("decoder.decoder_norm.", "decoder_norm."),
        ("decoder.decoder_pred.", "decoder_pred.")]
# Block lists: the hub's prefix (what export_hf writes), other spellings, official MAE prefix.
_BLOCKS = [("encoder.layer.", ("layers.",), "blocks."),
           ("decoder.decoder_layers.", ("decoder.decoder_encoder.layer.",), "decoder_blocks.")]
# Inside a block: hub name, transformers 5 name, timm name.
_SUB = [("layernorm_before.", "layernorm_before.", "norm1."),
        ("layernorm_after.", "layernorm_after.", "norm2."),
        ("attention.output.dense.", "attention.o_proj.", "attn.proj."),
        ("intermediate.dense.", "mlp.fc1.", "mlp.fc1."),
        ("output.dense.", "mlp.fc2.", "mlp.fc2.")]
# The three projections stacked (in this order) into timm's attn.qkv: hub name, transformers 5.
_QKV = [("attention.attention.query.", "attention.q_proj."),
        ("attention.attention.key.", "attention.k_proj."),
        ("attention.attention.value.", "attention.v_proj.")]
# Our settings -> the config.json keys that set them (config_from_hf), for messages.
HF_NAMES = {"depth": "num_hidden_layers", "embed_dim": "hidden_size", "img_size": "image_size",
            "patch_size": "patch_size", "in_chans": "num_channels",
            "mlp_ratio": "intermediate_size", "decoder_embed_dim": "decoder_hidden_size",
            "decoder_depth": "decoder_num_hidden_layers"}
_BLOCK_KEY = re.compile("^(" + "|".join(re.escape(p) for hub, other, _ in _BLOCKS
                                         for p in (hub, *other)) + r")(\d+)\.(.+)$")


# ------------------------------------------------------------------------------- hub cache
def hub_cache_dir() -> Path:
    """Where huggingface_hub keeps downloads: its own ``constants.HF_HUB_CACHE`` (read at each
    call), which huggingface_hub sets from ``HF_HUB_CACHE`` or ``HF_HOME`` when it is imported."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE).expanduser()


def is_hub_name(name: str) -> bool:
    """``owner/name`` (e.g. ``facebook/vit-mae-base``, ``timm/vit_base_patch16_224.mae``), not a
    path to a checkpoint file."""
    return (re.fullmatch(r"[\w.-]+/[\w.-]+", name) is not None and not name.startswith(".")
            and not name.endswith((".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".tar")))


def hub_snapshot(name: str) -> Path:
    """The cached snapshot folder of hub repository ``name``; never downloads."""
    from huggingface_hub import snapshot_download

    cache = hub_cache_dir()
    try:
        return Path(snapshot_download(name, cache_dir=cache, local_files_only=True))
    except Exception as e:  # noqa: BLE001 - not cached, or not a repo id: say where we looked
        raise FileNotFoundError(
            f"checkpoint not found: {name!r} is neither a local path nor a repository in the "
            f"Hugging Face cache {cache} (set HF_HUB_CACHE or HF_HOME to look elsewhere). "
            f"Nothing is downloaded here: on a connected machine run `hf download {name}` "
            f"(older huggingface_hub: `huggingface-cli download {name}`) and copy the cache "
            f"folder over ({type(e).__name__})") from e


# ------------------------------------------------------------------------------- reading
def read_hf_config(folder: Path) -> dict | None:
    """``folder/config.json`` when it describes a ViTMAE (a timm hub config is not one)."""
    path = folder / HF_CONFIG
    if not path.is_file():
        return None
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not readable JSON: {e}") from e
    return cfg if isinstance(cfg, dict) and cfg.get("model_type") == HF_MODEL_TYPE else None


def weights_file(folder: Path) -> Path:
    """The weights a ``save_pretrained`` directory or hub snapshot holds."""
    for name in HF_WEIGHTS:
        if (folder / name).is_file():
            return folder / name
    present = sorted(p.name for p in folder.iterdir())[:12]
    raise CheckpointError(
        f"{folder} is a directory without a checkpoint: expected a training run "
        f"({folder / 'checkpoint.pt'}) or a Hugging Face save_pretrained directory / hub "
        f"snapshot ({' or '.join(HF_WEIGHTS)}, with {HF_CONFIG}); found {present}")


# ------------------------------------------------------------------------------- key names
def _official_name(key: str) -> tuple[str, int | None]:
    """transformers name (without ``vit.``) -> (official name, q/k/v index or None)."""
    m = _BLOCK_KEY.match(key)
    if m is None:
        for old, new in _TOP:
            if key.startswith(old):
                return new + key[len(old):], None
        return key, None  # left for load_state's unexpected-key check
    prefix, idx, tail = m.groups()
    ours = next(o for hub, other, o in _BLOCKS if prefix in (hub, *other))
    for j, spellings in enumerate(_QKV):
        for s in spellings:
            if tail.startswith(s):
                return f"{ours}{idx}.attn.qkv.{tail[len(s):]}", j
    for hub, new, timm in _SUB:
        for s in (hub, new):
            if tail.startswith(s):
                return f"{ours}{idx}.{timm}{tail[len(s):]}", None
    return key, None


def hf_to_official(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ViTMAE keys, either spelling, with or without the ``vit.`` prefix -> official MAE keys;
    q / k / v stacked into ``qkv``. Missing or mis-shaped projections are named."""
    out, parts = {}, {}
    for key, v in sd.items():
        name, j = _official_name(key[4:] if key.startswith("vit.") else key)
        if j is None:
            out[name] = v
        else:
            parts.setdefault(name, [None] * 3)[j] = (key, v)
    for name, qkv in parts.items():
        if any(p is None for p in qkv):
            have = [p[0] for p in qkv if p is not None]
            missing = [("query", "key", "value")[j] for j, p in enumerate(qkv) if p is None]
            raise CheckpointError(f"huggingface checkpoint has {have} but not the {missing} "
                                  f"projection(s) of the same attention layer (for {name})")
        shapes = {tuple(p[1].shape) for p in qkv}
        if len(shapes) != 1:
            raise CheckpointError("huggingface checkpoint has query / key / value of different "
                                  "shapes: " + ", ".join(f"{k} {tuple(v.shape)}" for k, v in qkv))
        out[name] = torch.cat([p[1] for p in qkv], dim=0)
    return out


def official_to_hf(sd: dict[str, torch.Tensor], prefix: str = "vit.") -> dict[str, torch.Tensor]:
    """Official MAE keys -> the hub's ViTMAE keys (``prefix`` on the encoder's), q / k / v split."""
    out = {}
    for key, v in sd.items():
        m = re.match(r"^(blocks\.|decoder_blocks\.)(\d+)\.(.+)$", key)
        if m is None:
            hf = next(old + key[len(new):] for old, new in _TOP if key.startswith(new))
            out[hf if hf.startswith("decoder.") else prefix + hf] = v.detach().clone()
            continue
        ours, idx, tail = m.groups()
        hub = next(h for h, _, o in _BLOCKS if o == ours)
        head = ("" if hub.startswith("decoder.") else prefix) + f"{hub}{idx}."
        if tail.startswith("attn.qkv."):
            for (name, _), part in zip(_QKV, v.detach().chunk(3, dim=0)):
                out[head + name + tail[len("attn.qkv."):]] = part.clone()
        else:
            hf = next(h + tail[len(t):] for h, _, t in _SUB if tail.startswith(t))
            out[head + hf] = v.detach().clone()
    return out


# ------------------------------------------------------------------------------- settings
def config_from_hf(hf: dict, has_decoder: bool, overrides: dict) -> ModelConfig:
    """Our settings from a ViTMAE ``config.json`` (plus ``overrides``)."""
    if hf.get("hidden_act", "gelu") != "gelu" or not hf.get("qkv_bias", True):
        raise CheckpointError(f"config.json has hidden_act={hf.get('hidden_act')!r}, qkv_bias="
                              f"{hf.get('qkv_bias')!r}: only GELU with q/k/v biases is supported")
    size, patch = (hf.get(k, d) for k, d in (("image_size", 224), ("patch_size", 16)))
    if isinstance(size, (list, tuple)):
        if len(set(size)) != 1:
            raise CheckpointError(f"config.json image_size {size}: only square images")
        size = size[0]
    dim, ddim = hf.get("hidden_size", 768), hf.get("decoder_hidden_size", 512)
    ratio = hf.get("intermediate_size", 4 * dim) / dim
    if has_decoder and hf.get("decoder_intermediate_size", 4 * ddim) / ddim != ratio:
        raise CheckpointError(
            f"config.json: the decoder's MLP ratio ({hf.get('decoder_intermediate_size')} / "
            f"{ddim}) differs from the encoder's ({ratio}); one ratio is supported")
    cfg = dict(img_size=size, patch_size=patch, in_chans=hf.get("num_channels", 3),
               embed_dim=dim, depth=hf.get("num_hidden_layers", 12),
               num_heads=hf.get("num_attention_heads", 12), mlp_ratio=ratio,
               layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
               decoder_embed_dim=ddim, decoder_depth=hf.get("decoder_num_hidden_layers", 8),
               decoder_num_heads=hf.get("decoder_num_attention_heads", 16),
               mask_ratio=hf.get("mask_ratio", 0.75), norm_pix_loss=hf.get("norm_pix_loss", False))
    try:
        return ModelConfig(**{**cfg, **overrides})
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"config.json does not describe a valid model: {e}") from e


@LAYOUTS.register("huggingface")
def convert_huggingface(obj: dict, overrides: dict):
    """transformers' ViTMAE (``save_pretrained`` directory, hub snapshot or bare weights file):
    rename to official keys; the settings come from config.json when there is one."""
    hf = obj.get("hf_config")
    sd = hf_to_official(obj["hf_weights"] if hf is not None else obj)
    if hf is None:  # a weights file without its config.json: shapes, and transformers' eps
        cfg, has_decoder = infer_config(sd, "huggingface", None,
                                        **{"layer_norm_eps": 1e-12, **overrides})
        check_weights_agree(cfg, sd, has_decoder, "huggingface", claims_of(cfg, overrides))
        return sd, cfg, has_decoder
    has_decoder = "decoder_embed.weight" in sd
    cfg = config_from_hf(hf, has_decoder, overrides)
    check_weights_agree(cfg, sd, has_decoder, "huggingface",
                        claims_of(cfg, overrides, said=config_json_claim(hf, cfg)))
    return sd, cfg, has_decoder


def config_json_claim(hf: dict, cfg: ModelConfig):
    """How a disagreement names a setting of config.json, in its own key names:
    "config.json says num_hidden_layers=10000000"."""
    def claim(name: str) -> str:
        key = HF_NAMES.get(name, name)
        if key in hf:
            return f"{HF_CONFIG} says {key}={hf[key]!r}"
        return f"{HF_CONFIG} has no {key} (so {name}={getattr(cfg, name)!r}, the default)"
    return claim


# ------------------------------------------------------------------------------- export
def hf_config(cfg: ModelConfig, has_decoder: bool = True) -> dict:
    """A ViTMAE ``config.json`` for our settings."""
    return {"architectures": ["ViTMAEForPreTraining" if has_decoder else "ViTMAEModel"],
            "model_type": HF_MODEL_TYPE, "hidden_size": cfg.embed_dim,
            "num_hidden_layers": cfg.depth, "num_attention_heads": cfg.num_heads,
            "intermediate_size": int(cfg.embed_dim * cfg.mlp_ratio), "hidden_act": "gelu",
            "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
            "initializer_range": 0.02, "layer_norm_eps": cfg.layer_norm_eps,
            "image_size": cfg.img_size, "patch_size": cfg.patch_size,
            "num_channels": cfg.in_chans, "qkv_bias": True,
            "decoder_num_attention_heads": cfg.decoder_num_heads,
            "decoder_hidden_size": cfg.decoder_embed_dim,
            "decoder_num_hidden_layers": cfg.decoder_depth,
            "decoder_intermediate_size": int(cfg.decoder_embed_dim * cfg.mlp_ratio),
            "mask_ratio": cfg.mask_ratio, "norm_pix_loss": cfg.norm_pix_loss}


def export_hf(model: MaskedAutoencoder, folder: str | os.PathLike) -> Path:
    """Write ``model`` as a transformers ``save_pretrained`` directory (config.json +
    model.safetensors, the hub's key names): ``ViTMAEForPreTraining.from_pretrained(folder)``,
    or ``ViTMAEModel`` for a model loaded without decoder. Plain MAE only."""
    cfg = model.cfg
    if model.has_fusion or cfg.mask_token_in_encoder:
        what = "mask_token_in_encoder" if cfg.mask_token_in_encoder else "multi-level fusion"
        raise ValueError(f"a {cfg.kind.upper()} model with {what} has no ViTMAE equivalent; "
                         f"export_timm(model) exports its encoder")
    sd = {k: v for k, v in model.state_dict().items()
          if model.has_decoder or not k.startswith(("decoder", "mask_token"))}
    tensors = official_to_hf(sd, prefix="vit." if model.has_decoder else "")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_safetensors(tensors, folder / HF_WEIGHTS[0])
    atomic_write_text(folder / HF_CONFIG,
                      json.dumps(hf_config(cfg, model.has_decoder), indent=2) + "\n")
    return folder


# ------------------------------------------------------------------------------- masking
def masking_from_noise(noise: torch.Tensor, mask_ratio: float) -> Masking:
    """The mask transformers' ViTMAE draws from ``noise`` [B, N] (the ``int(N * (1 - r))``
    patches of lowest noise stay visible), for ``model(imgs, masking=...)``. The same patches are
    masked, so loss and predictions agree; our visible tokens are in raster order, HF's in noise
    order (attention does not care, only the encoder's token order differs)."""
    return masking_from_scores(noise, num_kept(noise.shape[1], mask_ratio))
