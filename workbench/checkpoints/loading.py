"""Loading: read a checkpoint (a file, a run directory, a Hugging Face folder or a cached hub
name), say which layout it is in, convert it, build the model and load its weights.

As in timm, loading is read -> :func:`detect_layout` -> the layout's converter (:data:`LAYOUTS`)
-> build -> load. Importing this module imports :mod:`workbench.checkpoints.hf`, so the
``huggingface`` converter is registered whenever a checkpoint can be loaded.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from ..core.config import ModelConfig
from ..core.io import checkpoint_path
from ..core.sizes import TooLarge, check_model_fits
from ..models import MaskedAutoencoder, MultiLevelFusion, model_from_config
from ..models.source import CheckpointInfo
from .files import CheckpointError, read_file
from .hf import hub_snapshot, is_hub_name, read_hf_config, weights_file
from .layouts import DECODER_KEYS, LAYOUTS, detect_layout, has_hf_keys


# ------------------------------------------------------------------------------- reading
def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                    mmap: bool = False) -> dict:
    """A checkpoint as a dict, with errors that say what is wrong. ``path``: a PyTorch file
    (safely unpickled), a ``.safetensors`` file, a Hugging Face ``save_pretrained`` directory or
    hub snapshot, or a hub name found in the local cache. ``mmap``: a PyTorch file's tensors are
    memory-mapped, not read (for a look at its settings without loading the weights)."""
    path = Path(path)
    if not path.exists() and is_hub_name(str(path)):
        path = hub_snapshot(str(path))
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    folder = path if path.is_dir() else path.parent
    obj = read_file(weights_file(path) if path.is_dir() else path, map_location, mmap)
    if has_hf_keys(obj) and (config := read_hf_config(folder)) is not None:
        return {"hf_config": config, "hf_weights": obj}  # the settings beside the weights
    return obj


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
    if cfg.has_fusion and "fusion.logits" in sd:
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


def load_models(paths: dict[str, str | os.PathLike], map_location: str | torch.device = "cpu"
                ) -> dict[str, MaskedAutoencoder]:
    """Several checkpoints by name, e.g. ``{"MAE": mae_path, "MFF-MAE": mff_path}`` ->
    ``{name: model}``, each loaded by :func:`load_checkpoint` (eval mode), in the given order."""
    return {name: load_checkpoint(path, map_location) for name, path in paths.items()}
