"""Paper-style figures (matplotlib) and interactive views (plotly) of probe results, one module
per subject; this package only gathers their public names (``plots.save_figure``, ...):

* :mod:`.files` -- ``save_figure`` (PNG + SVG or HTML) and ``save_json`` (the numbers behind it)
* :mod:`.reconstruction` -- MAE's reconstructions (Figs. 2-4)
* :mod:`.fusion` -- MFF's fusion weights over pretraining
* :mod:`.frequency` -- Park & Kim's Fourier analysis
* :mod:`.hessian` -- the top Hessian eigenvalues and the claim's per-minibatch log ratio
* :mod:`.accuracy` -- probe scores with Wilson intervals, the mask-ratio sweep, fine-tuning series
* :mod:`.claims` -- the claims' forest plot
* :mod:`.curvature` -- eigenvalue densities, Hutchinson traces, loss landscapes
* :mod:`.representations` -- per-block probes, CKA, attention statistics, the kNN monitor
* :mod:`.evidence` -- the evidence profile: every seed's curves
* :mod:`.dynamics` -- any probe over training (``probes.over_training``): steps, seeds as bands
* :mod:`.common` -- what several of them share (layer colours, the empty-input check)

Plots draw numbers the probes return; they compute nothing of their own beyond what a panel
states it shows (the Hessian claim's per-minibatch log ratio, Wilson intervals of probe
accuracies: ``minibatch_log_ratio``, ``wilson_interval``).
"""
from __future__ import annotations

from ..core.results import to_jsonable
from .accuracy import (finetune_series_figure, mask_ratio_sweep_figure, probe_scores_figure,
                       wilson_errors, wilson_interval)
from .claims import VERDICT_COLORS, forest_figure
from .curvature import density_figure, landscape_figure, trace_figure
from .dynamics import over_training_figure, snapshot_figure
from .evidence import frequency_seeds_figure, fusion_trajectories_figure, learning_curves_figure
from .files import save_figure, save_json
from .frequency import SUBLAYER_STYLES, frequency_figure, last_layer_spectrum_figure
from .fusion import fusion_weights_figure, fusion_weights_plotly
from .hessian import hessian_figure, minibatch_log_ratio
from .reconstruction import reconstruction_figure
from .representations import attention_figure, cka_figure, knn_history_figure, layer_probe_figure

__all__ = [
    "save_figure", "save_json", "to_jsonable",
    "reconstruction_figure",
    "fusion_weights_figure", "fusion_weights_plotly",
    "frequency_figure", "last_layer_spectrum_figure", "SUBLAYER_STYLES",
    "hessian_figure", "minibatch_log_ratio",
    "wilson_interval", "wilson_errors", "probe_scores_figure", "mask_ratio_sweep_figure",
    "finetune_series_figure",
    "forest_figure", "VERDICT_COLORS",
    "density_figure", "trace_figure", "landscape_figure",
    "layer_probe_figure", "cka_figure", "attention_figure", "knn_history_figure",
    "learning_curves_figure", "fusion_trajectories_figure", "frequency_seeds_figure",
    "over_training_figure", "snapshot_figure",
]
