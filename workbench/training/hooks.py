"""What a run measures besides its loss, handed to the loop by the layer that knows how.

The loop trains and writes; it does not know what a feature monitor or a reconstruction picture
is. :class:`TrainHooks` brings them in: ``workbench.experiments.pretraining`` wires the standard
ones (the kNN / linear-probe monitor of ``probes.monitor``, the reconstruction picture of
``probes.reconstruction``), and :func:`workbench.training.run_training` without hooks trains the
same weights and writes everything else (no ``knn_acc`` / ``probe_acc``, no pictures).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional

if TYPE_CHECKING:
    import torch

    from ..core.config import ModelConfig
    from .settings import TrainConfig

# model -> {name: number}: one reading of the monitor, logged into that step's record
Measure = Callable[["torch.nn.Module"], "dict[str, float]"]
# (resolved settings, model settings) -> a Measure, or None when the run's data cannot serve
MonitorFactory = Callable[["TrainConfig", "ModelConfig"], Optional[Measure]]
# (model, images [n, 3, S, S], seed) -> a PIL image of the reconstructions
DrawPicture = Callable[["torch.nn.Module", "torch.Tensor", int], Any]


@dataclass(frozen=True)
class TrainHooks:
    """The measurements a run takes, each optional.

    * ``monitor`` is called once, on rank 0 only and only when ``knn_every`` is set, to build the
      monitor; the loop then calls what it returned at step 0 of a new run, every ``knn_every``
      steps and at the last step, and adds the numbers to that step's metric record. Other ranks
      do not wait for it. It must draw nothing from the global random generators (a run's weights
      are the same with it or without it).
    * ``picture`` draws the picture saved as ``pictures/step_NNNNNN.png`` every
      ``picture_every`` steps and at the last one (rank 0).

    Both read a masked autoencoder: a supervised run (``objective="supervised"``) calls neither.
    """

    monitor: MonitorFactory | None = None
    picture: DrawPicture | None = None


NO_HOOKS = TrainHooks()
