"""Measurements of MAE / MFF-MAE models. Every probe returns numbers (tensors, small dataclasses,
dicts), never a figure; ``workbench.plots`` draws them.

* :func:`reconstruct` -- masked / reconstructed / pasted images (MAE Figs. 2-4)
* :func:`fusion_history`, :func:`fusion_state` -- MFF's fusion weights over training / now
* :func:`delta_log_amplitude`, :func:`frequency_response` -- Park & Kim's Fourier analysis
* :func:`top_hessian_eigenvalues`, :func:`hessian_spectrum`, :func:`spectrum_summary` --
  Hessian max-eigenvalue spectrum
* :func:`hessian_trace`, :func:`hessian_density` -- Hutchinson trace (with its interval) and the
  eigenvalue density by stochastic Lanczos quadrature; :func:`compare_curvature` for several
  models on the same batches and masks (the estimators, the Lanczos engine behind
  :func:`top_hessian_eigenvalues` and the exact-Hessian oracle are in ``workbench.linalg``;
  re-exported here)
* :func:`loss_landscape`, :func:`compare_landscapes` -- filter-normalised 1-D / 2-D loss slices
* :func:`linear_probe`, :func:`knn_probe`, :func:`probe_scores`, :func:`probe_results` --
  frozen-feature accuracy (per image right or wrong)
* :func:`layer_probes` -- linear and kNN accuracy of every block (cls and mean-pooled)
* :func:`linear_cka`, :func:`cka_matrix` -- representation similarity between layers / models
* :func:`attention_maps`, :func:`attention_statistics` -- attention distance, entropy, NMI
* :func:`knn_history` -- the feature monitor's held-out accuracy over training
* :func:`learning_check`, :func:`initial_model` -- has a run learned? Its linear probe against
  its own initialisation (``probes.learning``: the learning criterion)
* :func:`over_training` -- any probe at every weight snapshot of a run (``snapshot_steps``),
  cached in the run's ``probe_cache/`` (``probes.dynamics``; the names: ``OVER_TRAINING_PROBES``)
"""
from __future__ import annotations

from ..linalg import (HessianResult, SpectralDensity, TraceEstimate, hessian_density,
                      hessian_trace, smooth_spectrum)
from .curvature import compare_curvature, mae_loss_fn
from .fourier import (FrequencyResponse, delta_log_amplitude, diagonal_frequencies,
                      frequency_response, token_grid)
from .fusion import FusionHistory, FusionState, NoFusionError, fusion_history, fusion_state
from .hessian import (hessian_spectrum, select_parameters, spectrum_summary,
                      top_hessian_eigenvalues)
from .landscape import (LossLandscape, compare_landscapes, filter_normalized_direction,
                        loss_landscape)
from .linear import (extract_features, knn_probe, linear_probe, pooled_features, probe_correct,
                     probe_results, probe_scores)
from .reconstruction import Reconstruction, reconstruct, to_display, unnormalize_patches
from .cka import cka_matrix, layer_features, linear_cka
from .attention import (AttentionStatistics, attention_distance, attention_entropy,
                        attention_maps, attention_nmi, attention_statistics, patch_conditional,
                        patch_distances)
from .history import KnnHistory, NoKnnLogError, knn_history
from .layers import LayerProbes, block_features, layer_probes
from .learning import LearningCheck, initial_model, initial_models, learning_check
from .dynamics import (OVER_TRAINING_PROBES, OverTraining, OverTrainingProbe, ProbeInputs,
                       SnapshotModels, over_training, over_training_probe, over_training_series)

__all__ = [
    "reconstruct", "Reconstruction", "to_display", "unnormalize_patches",
    "fusion_history", "fusion_state", "FusionHistory", "FusionState", "NoFusionError",
    "delta_log_amplitude", "frequency_response", "FrequencyResponse", "diagonal_frequencies",
    "token_grid",
    "top_hessian_eigenvalues", "hessian_spectrum", "spectrum_summary", "HessianResult",
    "select_parameters",
    "hessian_trace", "TraceEstimate", "hessian_density", "SpectralDensity", "smooth_spectrum",
    "compare_curvature", "mae_loss_fn",
    "loss_landscape", "LossLandscape", "compare_landscapes", "filter_normalized_direction",
    "linear_probe", "knn_probe", "probe_scores", "probe_correct", "probe_results", "extract_features",
    "pooled_features",
    "linear_cka", "cka_matrix", "layer_features",
    "attention_maps", "attention_distance", "attention_entropy", "attention_nmi",
    "patch_conditional", "patch_distances", "attention_statistics", "AttentionStatistics",
    "knn_history", "KnnHistory", "NoKnnLogError", "layer_probes", "LayerProbes", "block_features",
    "learning_check", "LearningCheck", "initial_model", "initial_models",
    "over_training", "OverTraining", "OVER_TRAINING_PROBES", "OverTrainingProbe",
    "over_training_probe", "over_training_series", "ProbeInputs", "SnapshotModels",
]
