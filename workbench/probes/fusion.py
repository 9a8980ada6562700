"""MFF fusion weights: their history during training (MFF's Figure "weights move to shallow
layers") and their value in a loaded model."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..core.config import default_fuse_layers
from ..core.io import RunFiles, read_metrics, run_files


class NoFusionError(ValueError):
    """Fusion weights were asked of a plain MAE model or run (MAE has no fusion)."""


@dataclass
class FusionHistory:
    steps: torch.Tensor  # [T] int64 training steps
    weights: torch.Tensor  # [T, L] float64 normalised fusion weights (each row sums to 1)
    layers: list[int]  # [L] encoder block index of each fused layer (0-based)

    def weighted_depth(self) -> np.ndarray:
        """[T] the fusion's weighted mean depth at each step: the fused layers' block indices
        scaled to [0, 1] (0 the first block, 1 the deepest fused one), weighted by the
        normalised weights -- lower means the fusion leans on shallower layers."""
        layers = np.asarray(self.layers, dtype=float)
        return np.asarray(self.weights, dtype=float) @ (layers / max(1.0, layers.max()))

    def to_dict(self) -> dict:
        """JSON-ready: {"steps": [T], "weights": [T][L], "layers": [L]}."""
        return {"steps": self.steps.tolist(), "weights": self.weights.tolist(),
                "layers": list(self.layers)}

    @classmethod
    def from_dict(cls, d: dict) -> "FusionHistory":
        return cls(steps=torch.tensor(d["steps"], dtype=torch.int64),
                   weights=torch.tensor(d["weights"], dtype=torch.float64),
                   layers=[int(i) for i in d["layers"]])


def _layers_from_config(files: RunFiles) -> list[int] | None:
    model = (files.read_settings() or ({}, {}))[0]
    if model.get("fuse_layers") is not None:
        return [int(i) for i in model["fuse_layers"]]
    if model.get("depth") is not None:
        return default_fuse_layers(int(model["depth"]))
    return None


def fusion_history(run_dir: str | Path) -> FusionHistory:
    """Read ``run_dir/metrics.jsonl`` (one JSON object per line, as the training engine writes;
    read by :func:`workbench.core.io.read_metrics`) and return the logged fusion weights.

    Records without ``fusion_weights`` (evaluation lines, ...) are skipped. Weights are the
    softmax-normalised weights as logged; each row must sum to 1 (±1e-3). The fused layer indices
    come from the records' ``fuse_layers`` (``fused_layers`` in older runs), else from
    ``run_dir/config.json`` (``model.fuse_layers``, or the default rule for ``model.depth``). Raises
    :class:`NoFusionError` for a run that never logged fusion weights (a plain MAE run).
    """
    run_dir = Path(run_dir)
    path = run_files(run_dir).metrics if run_dir.is_dir() else run_dir
    if not path.exists():
        raise FileNotFoundError(f"no metrics file at {path}")
    steps, rows, layers = [], [], None
    for rec in read_metrics(path):
        w = rec.get("fusion_weights")
        if w is None:
            continue
        where = f"{path} (step {rec.get('step', '?')})"
        if "step" not in rec:
            raise ValueError(f"{path}: a record has fusion_weights but no step")
        if rows and len(w) != len(rows[0]):
            raise ValueError(f"{where} has {len(w)} fusion weights, earlier records "
                             f"{len(rows[0])}")
        if not math.isclose(sum(w), 1.0, abs_tol=1e-3) or min(w) < 0:
            raise ValueError(f"{where}: fusion_weights {w} are not normalised weights "
                             f"(non-negative, summing to 1)")
        logged = rec.get("fuse_layers", rec.get("fused_layers"))  # the older runs' key
        if logged is not None:
            these = [int(i) for i in logged]
            if layers is not None and these != layers:
                raise ValueError(f"{where}: fuse_layers changed from {layers} to {these}")
            layers = these
        steps.append(int(rec["step"]))
        rows.append([float(x) for x in w])
    if not rows:
        raise NoFusionError(f"{path} has no fusion_weights: is this a plain MAE run? Fusion "
                            f"weights exist only for MFF-MAE runs")
    if layers is None:
        layers = _layers_from_config(run_files(path.parent))
    if layers is None:
        raise ValueError(f"{path} does not say which layers are fused (no fuse_layers and no "
                         f"config.json with the model's depth)")
    if len(layers) != len(rows[0]):
        raise ValueError(f"{len(rows[0])} fusion weights per line but {len(layers)} fused layers "
                         f"{layers}")
    return FusionHistory(steps=torch.tensor(steps, dtype=torch.int64),
                         weights=torch.tensor(rows, dtype=torch.float64), layers=layers)


@dataclass
class FusionState:
    """An MFF model's fusion now (not over training: that is :class:`FusionHistory`)."""
    layers: list[int]  # [L] encoder block index of each fused layer (0-based)
    weights: torch.Tensor  # [L] float32 normalised fusion weights, summing to 1

    def to_dict(self) -> dict:
        return {"layers": list(self.layers), "weights": self.weights.tolist()}


def fusion_state(model) -> FusionState:
    """The fused layer indices and normalised weights of an MFF model (``model.has_fusion``);
    raises :class:`NoFusionError` for a plain MAE."""
    if not getattr(model, "has_fusion", False):
        kind = getattr(getattr(model, "cfg", None), "kind", type(model).__name__)
        raise NoFusionError(f"a {kind!r} model has no fusion weights: only MFF-MAE models fuse "
                            f"layers")
    return FusionState(layers=list(model.fuse_layers),
                       weights=model.fusion_weights().detach().cpu())
