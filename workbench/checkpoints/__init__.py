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

The modules, each importing only those before it: :mod:`.files` (reading and writing files),
:mod:`.layouts` (detecting a layout, the converters, the settings inferred and checked against the
weights), :mod:`.hf` (Hugging Face ViTMAE: its converter, the hub cache, export),
:mod:`.loading` (:func:`load_checkpoint`, :func:`load_models`), :mod:`.weights` (our layout
written, :func:`save_weights`, :func:`export_timm`), :mod:`.classifier` (the fine-tuned timm
ViT: :func:`classifier_from_encoder`, :func:`load_classifier`). This package only re-exports
their names.
"""
from __future__ import annotations

from ..models.source import CheckpointInfo
from .files import (FORMAT, FORMAT_VERSION, CheckpointError, read_file, read_safetensors,
                    write_safetensors)
from .layouts import (DECODER_KEYS, HF_KEYS, LAYOUTS, Claims, Converter, check_weights_agree,
                      claims_of, convert_mae_official, convert_mmpretrain, convert_timm,
                      convert_workbench, detect_layout, has_hf_keys, held_by_weights,
                      infer_config, mmpretrain_to_official)
from .loading import load_checkpoint, load_models, load_state, read_checkpoint
from .weights import TIMM_ENCODER_KEYS, checkpoint_dict, export_timm, save_checkpoint, save_weights
from .classifier import (Classifier, classifier_from_encoder, freeze_blocks, load_classifier,
                         save_classifier, timm_create_args, timm_name)

__all__ = ["load_checkpoint", "load_models", "read_checkpoint", "load_state", "save_checkpoint",
           "save_weights", "checkpoint_dict", "export_timm", "detect_layout", "LAYOUTS",
           "Converter", "CheckpointError", "CheckpointInfo", "infer_config", "claims_of",
           "Claims", "check_weights_agree", "held_by_weights", "mmpretrain_to_official",
           "convert_workbench", "convert_mmpretrain", "convert_mae_official", "convert_timm",
           "has_hf_keys", "read_file", "read_safetensors", "write_safetensors", "FORMAT",
           "FORMAT_VERSION", "TIMM_ENCODER_KEYS", "DECODER_KEYS", "HF_KEYS", "Classifier",
           "classifier_from_encoder", "freeze_blocks", "load_classifier", "save_classifier",
           "timm_create_args", "timm_name"]
