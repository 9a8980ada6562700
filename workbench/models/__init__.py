"""MAE and MFF-MAE models. ``build_model("mff", "vit-b")`` is the usual entry point."""
from __future__ import annotations

from ..core.config import ModelConfig, model_config
from .kinds import MODEL_CLASSES, model_class
from .mae import EncoderOnlyError, MAEOutput, MaskedAutoencoder
from .masking import MASK_SCORES, Masking, mask_patches, num_kept
from .mff import MFFMaskedAutoencoder, MultiLevelFusion
from .modes import eval_mode
from .source import CheckpointInfo


def model_from_config(cfg: ModelConfig, **kwargs) -> MaskedAutoencoder:
    """The model class registered for ``cfg.kind``, built with ``kwargs`` (``has_decoder``,
    ``source``)."""
    return MODEL_CLASSES.get(cfg.kind)(cfg, **kwargs)


def build_model(kind: str = "mae", preset: str = "tiny", **overrides) -> MaskedAutoencoder:
    """A freshly initialised MAE (``kind="mae"``) or MFF-MAE (``kind="mff"``).

    ``preset`` is one of ``tiny``, ``vit-s``, ``vit-b``, ``vit-l``, ``vit-h``; any
    :class:`~workbench.core.config.ModelConfig` field can be overridden by keyword. A config that
    cannot fit in this machine's memory is refused before anything is allocated
    (:func:`workbench.core.sizes.check_model_fits`).
    """
    from ..core.sizes import check_model_fits

    cfg = model_config(kind, preset, **overrides)
    check_model_fits(cfg)
    return model_from_config(cfg)


__all__ = ["build_model", "model_from_config", "MaskedAutoencoder", "MFFMaskedAutoencoder",
           "MultiLevelFusion", "MAEOutput", "Masking", "mask_patches", "num_kept",
           "EncoderOnlyError", "eval_mode", "CheckpointInfo", "MODEL_CLASSES", "model_class",
           "MASK_SCORES"]
