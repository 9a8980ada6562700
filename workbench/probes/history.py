"""What a run logged over training besides its loss: the kNN monitor's held-out accuracy."""
from __future__ import annotations

import os
from dataclasses import dataclass

from ..core.io import read_metrics, run_files


class NoKnnLogError(ValueError):
    """The run logged no ``knn_acc`` (trained with ``knn_every=0`` or before the monitor)."""


@dataclass
class KnnHistory:
    steps: list[int]
    accuracy: list[float]  # in [0, 1], held-out weighted-kNN accuracy at each step
    n_queries: int | None  # held-out images per measurement (from config.json), None if unknown
    # in [0, 1], the monitor's linear probe at the same steps (None: a run from before it)
    probe_accuracy: list[float] | None = None

    def to_dict(self) -> dict:
        return {"steps": self.steps, "accuracy": self.accuracy, "n_queries": self.n_queries,
                "probe_accuracy": self.probe_accuracy}


def knn_history(run_dir: str | os.PathLike) -> KnnHistory:
    """The kNN monitor's accuracy over training, from a run directory's ``metrics.jsonl``."""
    files = run_files(run_dir)
    rows = [r for r in read_metrics(files.metrics) if "knn_acc" in r]
    if not rows:
        raise NoKnnLogError(f"{files.metrics} has no knn_acc: the run was trained without the "
                            f"kNN monitor (knn_every=0) or before it existed; train with "
                            f"--knn-every N")
    knn_images = (files.read_settings() or ({}, {}))[1].get("knn_images")
    n = knn_images // 2 if isinstance(knn_images, int) else None
    probe = [float(r["probe_acc"]) for r in rows] if all("probe_acc" in r for r in rows) else None
    return KnnHistory([int(r["step"]) for r in rows], [float(r["knn_acc"]) for r in rows], n,
                      probe)
