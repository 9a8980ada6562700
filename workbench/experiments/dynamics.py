"""The training-dynamics figures (issue 32): the gallery's probes at every weight snapshot of runs
trained with ``snapshot_steps`` (``probes.over_training``, cached in each run's
``probe_cache/``), drawn against the step, and each headline number's change from the first
snapshot (the initialisation) to the last, with a 95 % interval over seeds when there are two or
more.

    series = dynamics_series({"MAE": "runs/mae-tiny-dynamics", "MFF-MAE": [seed0, seed1]})
    dynamics_figures(series, "figures/training_dynamics")   # one figure per probe
    change_table(series)                                    # rows: probe, model, name, change
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..plots import over_training_figure, save_figure
from ..probes import OverTraining, over_training_series
from ..widgets import DynamicsExplorer
from .findings import decide

# The gallery's probes over training and their settings (the cheap ones: the gallery's notebook
# takes 133 s for 9 snapshots of the tiny MAE and MFF-MAE on one core of the 2-core CPU, its
# explorer and the kernel's start included, most of it the linear probe's 512 + 512 forwards;
# the Hessian probes cost 10-100 times more and are left to the user:
# over_training(run, "hessian_top", k=1)).
GALLERY_PROBES: dict[str, dict] = {
    "reconstruction_loss": dict(mask_ratio=0.75, images=64),
    "linear_probe": dict(train=512, test=512),
    "cka_to_final": dict(images=64),
    **DynamicsExplorer.PANEL_PROBES,  # frequency, fusion, attention distance: the explorer's
}
# what each probe's headline numbers are, for the figures' y axes
Y_LABELS = {"reconstruction_loss": "held-out masked loss (ratio 0.75)",
            "linear_probe": "linear-probe accuracy (shapes, held-out)",
            "frequency": "Δ log amplitude at the highest frequency",
            "attention_distance": "mean attention distance (px)",
            "cka_to_final": "linear CKA with the last snapshot",
            "fusion": "normalised fusion weight"}


def dynamics_series(runs: Mapping[str, str | os.PathLike | Sequence],
                    probes: Mapping[str, dict] | None = None,
                    progress: bool = False) -> dict[str, dict[str, list[OverTraining]]]:
    """{probe: {label: [OverTraining per seed]}} of every probe of ``probes`` (default
    :data:`GALLERY_PROBES`) over every run of ``runs`` ({label: run folder or [one per seed]});
    a probe a model does not have (an MAE's fusion weights) is left out for that model."""
    return over_training_series(dict(runs), dict(GALLERY_PROBES if probes is None else probes),
                                progress=progress)


def change_over_training(seeds: Sequence[OverTraining], name: str) -> dict:
    """A headline number's change from each seed's first snapshot to its last: {"start",
    "end", "change"} (means over the seeds), the per-seed changes, and the 95 % t interval of
    the mean change over the seeds (None with one seed: its change is one number)."""
    starts = np.array([r.series(name)[0] for r in seeds], dtype=float)  # [S]
    ends = np.array([r.series(name)[-1] for r in seeds], dtype=float)  # [S]
    changes = ends - starts
    row = {"name": name, "start": float(starts.mean()), "end": float(ends.mean()),
           "change": float(changes.mean()), "per_seed": changes.tolist(), "seeds": len(seeds),
           "steps": [int(seeds[0].steps[0]), int(seeds[0].steps[-1])], "ci": None}
    if len(seeds) >= 2:
        row["ci"] = [float(x) for x in decide(changes, test="t").ci]
    return row


def change_table(series: Mapping[str, Mapping[str, Sequence[OverTraining]]]) -> list[dict]:
    """Every headline number's :func:`change_over_training`, with its probe and model."""
    return [{"probe": probe, "model": label, **change_over_training(seeds, name)}
            for probe, by_model in series.items() for label, seeds in by_model.items()
            for name in seeds[0].names]


def change_markdown(rows: Sequence[dict]) -> str:
    """The change table as Markdown: the interval, or "one seed" where there is none."""
    lines = ["| probe | model | number | start | end | end − start | 95 % interval (seeds) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        ci = (f"[{r['ci'][0]:+.3f}, {r['ci'][1]:+.3f}] ({r['seeds']})" if r["ci"] is not None
              else "one seed: none")
        lines.append(f"| {r['probe']} | {r['model']} | {r['name']} | {r['start']:.3f} | "
                     f"{r['end']:.3f} | {r['change']:+.3f} | {ci} |")
    return "\n".join(lines) + "\n"


def dynamics_figures(series: Mapping[str, Mapping[str, Sequence[OverTraining]]],
                     out_dir: str | os.PathLike) -> list[Path]:
    """One figure per probe (``over_training_figure``: the models as line styles, seeds as
    bands), saved as ``over_training_<probe>`` in ``out_dir`` with its numbers; the paths."""
    import matplotlib.pyplot as plt

    paths: list[Path] = []
    for probe, by_model in series.items():
        fig = over_training_figure(dict(by_model), ylabel=Y_LABELS.get(probe),
                                   title=f"{probe} over training")
        data = {label: [r.to_dict() for r in seeds] for label, seeds in by_model.items()}
        paths += save_figure(fig, out_dir, f"over_training_{probe}", data=data)
        plt.close(fig)
    return paths
