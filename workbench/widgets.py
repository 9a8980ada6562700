"""ipywidgets apps: a probe and a plot behind a few controls.

Each app keeps its last result in attributes (``results``, ``masked_count``, ``last_ms``) so tests
and notebooks can check what a control change did without a browser.
"""
from __future__ import annotations

import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Mapping, Sequence

import ipywidgets as W
import torch

from .core.config import MASK_STRATEGIES
from .core.io import atomic_write
from .core.pictures import (COLUMNS, attention_overlay, colour_bar, compose_rows, png_bytes,
                            stats_caption)
from .data.viewing import viewed
from .plots import snapshot_figure
from .probes import SnapshotModels, attention_maps, over_training_series, reconstruct
from .probes.reconstruction import to_display


HEADER_PX = 36  # the column labels of ReconstructionExplorer: two lines of 16 px


class ReconstructionExplorer:
    """MAE Figs. 2-4 interactively: mask-ratio slider (0.05-0.95), strategy, image and seed;
    every model in ``models`` (e.g. {"MAE": mae, "MFF-MAE": mff}) side by side. With
    ``snapshots`` (``probes.SnapshotModels``: step -> {label: model}; :meth:`from_runs`) a step
    slider picks the training step whose models are shown (``models`` may then be None).
    "save PNG" writes into ``save_folder`` (default: the notebook's working folder)."""

    def __init__(self, models: Mapping[str, torch.nn.Module] | None, imgs: torch.Tensor,
                 mask_ratio: float = 0.75, strategy: str = "random", seed: int = 0,
                 scale: int | None = None, snapshots: SnapshotModels | None = None,
                 save_folder: str | os.PathLike = "."):
        self.snapshots = snapshots
        self.step = None if snapshots is None else W.SelectionSlider(
            options=snapshots.steps, value=snapshots.steps[-1], description="step",
            continuous_update=True, layout=W.Layout(width="420px"))
        self.models = dict(models if snapshots is None else snapshots[self.step.value])
        self.imgs = imgs
        size = imgs.shape[-1]
        self.scale = scale or max(1, 160 // size)
        self.ratio = W.FloatSlider(value=mask_ratio, min=0.05, max=0.95, step=0.05,
                                   description="mask ratio", readout_format=".2f",
                                   continuous_update=True)
        self.strategy = W.Dropdown(options=list(MASK_STRATEGIES), value=strategy,
                                   description="strategy")
        self.index = W.IntSlider(value=0, min=0, max=imgs.shape[0] - 1, description="image")
        self.seed = W.IntText(value=seed, description="seed", layout=W.Layout(width="160px"))
        # one label per panel, as wide as the panel plus compose_rows' gap (pad 2), in a header of
        # fixed height, so in the browser the labels stay over their columns and the model names
        # (after a spacer of that height) beside their rows
        labels = "".join(f"<div style='width:{self.scale * size}px;margin-right:{2 * self.scale}px;"
                         f"flex:none;text-align:center;font-weight:bold;overflow-wrap:anywhere'>"
                         f"{label}</div>" for _, label in COLUMNS)
        self.header = W.HTML(f"<div style='display:flex;height:{HEADER_PX}px;align-items:flex-end;"
                             f"font-size:12px;line-height:16px'>{labels}</div>")
        self.names = W.HTML()
        self.image = W.Image(format="png")
        self.status = W.HTML()
        self.source = W.HTML()  # which images are shown: the notebook's, or the uploaded ones
        # your own images: any number of image files, each shown as the probes see it
        self.upload = W.FileUpload(accept="image/*", multiple=True, description="your images")
        self.upload.observe(lambda change: self.use_uploads(change["new"]), names="value")
        self.save = SaveButton(self.image, lambda: (f"reconstruction-{self.step_tag()}"
                                                    f"ratio{self.ratio.value:.2f}-"
                                                    f"{self.strategy.value}-image"
                                                    f"{self.index.value}-seed{self.seed.value}"),
                               save_folder)
        for control in (self.ratio, self.strategy, self.index, self.seed):
            control.observe(self.update, names="value")
        if self.step is not None:
            self.step.observe(lambda change: self.use_step(change["new"]), names="value")
        self.widget = W.VBox([
            *([] if self.step is None else [self.step]),
            W.HBox([self.ratio, self.strategy]), W.HBox([self.index, self.seed]),
            W.HBox([self.upload, self.save.button, self.source]),
            W.HBox([self.names, W.VBox([self.header, self.image])]), self.status, self.save.note])
        self.results: dict = {}
        self.masked_count = 0
        self.last_ms = 0.0
        # one thread per model when there are cores for them (torch releases the GIL inside
        # its kernels, so the models' forwards overlap); the same model twice stays sequential,
        # as it is switched to eval mode and back by each call
        distinct = len({id(m) for m in self.models.values()}) == len(self.models)
        self._pool = (ThreadPoolExecutor(len(self.models), thread_name_prefix="explorer")
                      if len(self.models) > 1 and distinct and (os.cpu_count() or 1) > 1
                      else None)
        self.update()

    @classmethod
    def from_runs(cls, runs: Mapping[str, str | os.PathLike], imgs: torch.Tensor,
                  keep: int | None = None, **settings) -> "ReconstructionExplorer":
        """The explorer over training: the weight snapshots of each run in ``runs`` ({label:
        run folder}, trained with ``snapshot_steps``), a step slider over the steps they share
        (starting at the last); ``keep``: steps held in memory (None: all)."""
        return cls(None, imgs, snapshots=SnapshotModels(dict(runs), keep=keep), **settings)

    def use_step(self, step: int) -> None:
        """Show the models of training step ``step`` (a snapshot step) from now on."""
        self.models = dict(self.snapshots[step])
        self.update()

    def use_images(self, imgs: torch.Tensor, source: str) -> None:
        """Show ``imgs`` [n, 3, S, S] (ImageNet-normalised, the models' size) from now on."""
        self.imgs = imgs
        self.index.max = imgs.shape[0] - 1  # before the value, which the max may clamp
        self.index.value = 0
        self.source.value = f"<small>{source}</small>"
        self.update()

    def use_uploads(self, files) -> None:
        """The uploaded files (FileUpload's value: name and bytes of each), as the eval view at
        the models' image size; a file that is not a readable image is named, not shown."""
        if not files:
            return
        size = self.imgs.shape[-1]
        try:
            shown = viewed([(f["name"], bytes(f["content"])) for f in files], size, ["upload"])
        except ValueError as e:
            self.source.value = f"<small style='color:#b42318'>{e}</small>"
            return
        self.use_images(shown.images, "uploaded: " + shown.summary())

    def step_tag(self) -> str:
        return "" if self.step is None else f"step{self.step.value}-"

    def reconstruct_all(self) -> dict:
        """Every model's reconstruction of the current image, mask ratio, strategy and seed."""
        args = (self.imgs[self.index.value:self.index.value + 1], self.ratio.value,
                self.strategy.value, self.seed.value)
        if self._pool is None:
            return {name: reconstruct(m, *args) for name, m in self.models.items()}
        futures = {name: self._pool.submit(reconstruct, m, *args)
                   for name, m in self.models.items()}
        return {name: f.result() for name, f in futures.items()}

    def update(self, *_):
        start = time.perf_counter()
        self.results = self.reconstruct_all()
        self.image.value = png_bytes(compose_rows(self.results, 0, self.scale))
        first = next(iter(self.results.values()))
        self.masked_count = int(first.mask.sum())
        self.last_ms = (time.perf_counter() - start) * 1e3
        row_h = self.scale * self.imgs.shape[-1]
        self.names.value = f"<div style='height:{HEADER_PX}px'></div>" + "".join(
            f"<div style='height:{row_h + 2 * self.scale}px;display:flex;align-items:center'>"
            f"<b>{n}</b></div>" for n in self.results)
        losses = ", ".join(f"{n} loss {float(r.loss):.3f}" for n, r in self.results.items())
        at = "" if self.step is None else f"step {self.step.value} · "
        self.status.value = (f"{at}{self.masked_count}/{first.mask.shape[1]} patches masked · "
                             f"{losses} · {self.last_ms:.0f} ms<br><small>"
                             f"{stats_caption({n: r.stats for n, r in self.results.items()})}"
                             f"</small>")

    def latency(self, ratios: Sequence[float] = (0.05, 0.25, 0.5, 0.75, 0.95),
                repeats: int = 4) -> dict:
        """Time the update behind a slider move: set the mask-ratio slider to each of ``ratios``,
        ``repeats`` times over, and read each update's ``last_ms``. Returns {"median_ms",
        "max_ms", "updates"}. The slider (and the picture) end where they were before."""
        if not ratios or repeats < 1:
            raise ValueError("need at least one ratio and one repeat")
        before = self.ratio.value
        times = []
        try:
            for ratio in list(ratios) * repeats:
                if self.ratio.value == ratio:
                    self.update()  # no change, no observer call: run the update itself
                else:
                    self.ratio.value = ratio
                times.append(self.last_ms)
        finally:
            if self.ratio.value != before:
                self.ratio.value = before
        return {"median_ms": statistics.median(times), "max_ms": max(times),
                "updates": len(times)}

    def _ipython_display_(self):  # display(explorer) shows the app
        from IPython.display import display
        display(self.widget)


class SaveButton:
    """"save PNG": the widget's picture as it is now, written to ``folder`` (default: the
    notebook's working folder) under a name that says its settings; the path is shown."""

    def __init__(self, image: W.Image, name, folder: str | os.PathLike = "."):
        self.image, self.name, self.folder = image, name, folder
        self.button = W.Button(description="save PNG", icon="download",
                               layout=W.Layout(width="110px"))
        self.note = W.HTML()
        self.button.on_click(lambda _: self.save())
        self.last_path: str | None = None

    def save(self) -> str:
        path = os.path.join(self.folder, f"{self.name()}.png")
        data = bytes(self.image.value)
        atomic_write(path, lambda f: f.write(data))
        self.last_path = path
        self.note.value = f"<small>saved {os.path.abspath(path)}</small>"
        return path


class AttentionExplorer:
    """Where one patch looks: pick model, image, encoder block, head (or their mean) and query
    patch; the query's attention over the patches is drawn over the image. Maps come from
    ``probes.attention_maps`` (the model's own blocks), computed once per model and image."""

    def __init__(self, models: Mapping[str, torch.nn.Module], imgs: torch.Tensor,
                 scale: int | None = None,
                 save_folder: str | os.PathLike = "."):
        self.models, self.imgs = dict(models), imgs
        cfg = next(iter(self.models.values())).cfg
        self.grid, self.patch = cfg.grid_size, cfg.patch_size
        self.scale = scale or max(1, 192 // imgs.shape[-1])
        narrow = dict(layout=W.Layout(width="290px"))  # two a row: the app stays ~600 px wide
        self.model = W.Dropdown(options=list(self.models), description="model", **narrow)
        self.index = W.IntSlider(value=0, min=0, max=imgs.shape[0] - 1, description="image",
                                 **narrow)
        self.layer = W.IntSlider(value=cfg.depth - 1, min=0, max=cfg.depth - 1,
                                 description="block", **narrow)
        self.head = W.Dropdown(options=["mean"] + list(range(cfg.num_heads)), value="mean",
                               description="head", **narrow)
        self.row = W.IntSlider(value=self.grid // 2, min=0, max=self.grid - 1,
                               description="query row", **narrow)
        self.col = W.IntSlider(value=self.grid // 2, min=0, max=self.grid - 1,
                               description="query col", **narrow)
        side = self.scale * imgs.shape[-1]
        # the picture at its own width (in the browser a VBox stretches an image of no width to
        # the whole output), the key under it as wide
        self.image = W.Image(format="png", layout=W.Layout(width=f"{side}px"))
        self.status = W.HTML()
        # the colours' key: 0 at the left, the largest weight of the current map at the right
        self.key = W.Image(value=png_bytes(colour_bar(side)), format="png",
                           layout=W.Layout(width=f"{side}px"))
        self.key_labels = W.HTML()
        self.save = SaveButton(self.image, lambda: (
            f"attention-{self.model.value}-image{self.index.value}-block{self.layer.value}-"
            f"head{self.head.value}-query{self.row.value}x{self.col.value}"), save_folder)
        for control in (self.model, self.index, self.layer, self.head, self.row, self.col):
            control.observe(self.update, names="value")
        self.widget = W.VBox([W.HBox([self.model, self.index]), W.HBox([self.layer, self.head]),
                              W.HBox([self.row, self.col]), self.image, self.key,
                              self.key_labels, W.HBox([self.save.button, self.save.note]),
                              self.status], layout=W.Layout(max_width="620px"))
        self._maps: dict = {}
        self.weights = torch.zeros(self.grid, self.grid)
        self.update()

    def maps(self) -> list[torch.Tensor]:
        """The current model's maps of the current image: per block [1, heads, T, T]."""
        key = (self.model.value, self.index.value)
        if key not in self._maps:
            i = self.index.value
            self._maps[key] = attention_maps(self.models[key[0]], self.imgs[i:i + 1])
        return self._maps[key]

    def update(self, *_):
        attn = self.maps()[self.layer.value][0]  # [heads, T, T], cls first
        attn = attn.mean(0) if self.head.value == "mean" else attn[self.head.value]  # [T, T]
        query = 1 + self.row.value * self.grid + self.col.value  # token index (cls is 0)
        row = attn[query, 1:]  # the query's attention over the patches (cls dropped)
        self.weights = (row / row.sum()).reshape(self.grid, self.grid)  # [g, g]
        img = to_display(self.imgs[self.index.value:self.index.value + 1])[0]
        self.image.value = png_bytes(attention_overlay(
            img, self.weights, (self.row.value, self.col.value), self.patch, self.scale))
        side = self.scale * self.imgs.shape[-1]
        self.key_labels.value = (f"<div style='display:flex;justify-content:space-between;"
                                 f"width:{side}px;font-size:11px'><span>0</span><span>attention "
                                 f"weight</span><span>{float(self.weights.max()):.3f}</span></div>")
        self.status.value = (f"{self.model.value}, block {self.layer.value}, head "
                             f"{self.head.value}: query patch ({self.row.value}, "
                             f"{self.col.value}); largest weight {float(self.weights.max()):.3f} "
                             f"(cls dropped, rows renormalised)")

    def _ipython_display_(self):
        from IPython.display import display
        display(self.widget)


class DynamicsExplorer:
    """Drag the training step (issue 32): at each weight snapshot of the runs ({label: run
    folder}, e.g. MAE and MFF-MAE trained with ``snapshot_steps``), their reconstructions (the
    :class:`ReconstructionExplorer` over the snapshots, all its controls) and a panel of their
    frequency curves, fusion weights (MFF) and attention distance at that step. The panel's
    numbers come from ``probes.over_training`` (cached in each run's ``probe_cache/``), and its
    picture for every step is drawn once, at the start: moving the slider then reconstructs and
    swaps a picture, as fast as the mask-ratio slider."""

    # the panel's probes and settings (the gallery's too, so that its measurements are shared
    # through the runs' probe_cache/)
    PANEL_PROBES = {"frequency": dict(images=64), "fusion": {},
                    "attention_distance": dict(images=32)}

    def __init__(self, runs: Mapping[str, str | os.PathLike], imgs: torch.Tensor,
                 probes: Mapping[str, dict] | None = None, progress: bool = False,
                 **explorer_settings):
        self.runs = dict(runs)
        self.explorer = ReconstructionExplorer.from_runs(self.runs, imgs, **explorer_settings)
        self.step = self.explorer.step
        steps = self.explorer.snapshots.steps
        self.series = over_training_series(self.runs, probes or self.PANEL_PROBES, steps=steps,
                                           progress=progress)
        self.panels = {step: figure_png(snapshot_figure(step, self.at(step))) for step in steps}
        self.panel = W.Image(value=self.panels[self.step.value], format="png")
        self.save = SaveButton(self.panel, lambda: f"dynamics-step{self.step.value}",
                               explorer_settings.get("save_folder", "."))
        self.step.observe(self.show_panel, names="value")
        self.widget = W.VBox([self.explorer.widget, self.panel,
                              W.HBox([self.save.button, self.save.note])])

    def at(self, step: int) -> dict[str, dict[str, dict]]:
        """{probe: {label: its full result at ``step``}}."""
        return {probe: {label: r[0].results[r[0].steps.index(step)]
                        for label, r in by_run.items()} for probe, by_run in self.series.items()}

    def show_panel(self, change) -> None:
        self.panel.value = self.panels[change["new"]]

    def save_steps(self, folder: str | os.PathLike, steps: Sequence[int] | None = None
                   ) -> list[str]:
        """What the app shows at each of ``steps`` (default: the first and the last), as
        ``dynamics-stepN-reconstruction.png`` and ``dynamics-stepN-probes.png`` in ``folder``
        (for a gallery, where no slider moves); the slider ends where it was. The paths."""
        all_steps, before, paths = self.explorer.snapshots.steps, self.step.value, []
        try:
            for step in steps or sorted({all_steps[0], all_steps[-1]}):
                self.step.value = step
                shown = (("reconstruction", self.explorer.image), ("probes", self.panel))
                for part, image in shown:
                    paths.append(os.path.join(folder, f"dynamics-step{step}-{part}.png"))
                    data = bytes(image.value)
                    atomic_write(paths[-1], lambda f, data=data: f.write(data))
        finally:
            self.step.value = before
        return paths

    def latency(self, repeats: int = 2) -> dict:
        """Time a drag of the step slider over every step, ``repeats`` times: each move's wall
        time (reconstructions and the panel swapped). Returns {"median_ms", "max_ms",
        "updates"}; the slider ends where it was."""
        steps, before, times = self.explorer.snapshots.steps, self.step.value, []
        try:
            for step in [s for _ in range(repeats) for s in steps if s != before] + [before]:
                t = time.perf_counter()
                self.step.value = step
                times.append((time.perf_counter() - t) * 1e3)
        finally:
            self.step.value = before
        return {"median_ms": statistics.median(times), "max_ms": max(times),
                "updates": len(times)}

    def _ipython_display_(self):
        from IPython.display import display
        display(self.widget)


def figure_png(fig, dpi: int = 80) -> bytes:
    """A matplotlib figure as PNG bytes (the figure is closed)."""
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return buffer.getvalue()
