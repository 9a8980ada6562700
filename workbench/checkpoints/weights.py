"""Writing: our checkpoint layout (config, weights and training state), the weights alone as one
``.safetensors`` file, and the encoder as a timm ``VisionTransformer`` state dict."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ..core.io import atomic_save
from ..models import MaskedAutoencoder
from .files import FORMAT, FORMAT_VERSION, write_safetensors

# Key prefixes of the encoder as a timm VisionTransformer (official MAE names): what export_timm
# writes.
TIMM_ENCODER_KEYS = ("cls_token", "pos_embed", "patch_embed.", "blocks.", "norm.")


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
