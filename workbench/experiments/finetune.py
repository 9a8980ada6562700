"""Fine-tuning a pretrained checkpoint into a classifier: MAE's ``main_finetune.py`` recipe run by
the one training loop (``TrainConfig(objective="finetune")``, :mod:`workbench.training.finetune`).

:func:`finetune_config` reads the checkpoint's encoder settings (any layout ``load_checkpoint``
reads; a file without an encoder is refused here, before anything is written) and starts from
the recipe's defaults; :func:`finetune` trains it and then writes ``model.safetensors``: the
classifier in timm's key names (``workbench.load_classifier`` or ``timm.create_model`` read it).

:func:`finetune_series` runs :func:`finetune` over MAE Fig. 9's partial fine-tuning (the last k
blocks) and MFF's few-shot shares of the labels for several checkpoints, and scores every run on
the same held-out images (:class:`FinetuneSeries`); :func:`series_claims` turns one series per
seed into the two claims of ``findings``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..checkpoints import load_classifier, read_checkpoint, save_classifier
from ..core.config import PRESETS, ModelConfig
from ..core.io import run_files
from ..core.results import AsDict
from ..data import build_dataset, fixed_batch
from ..training import IF_ANY, TrainConfig, TrainResult, resolve, run_training
from ..training.finetune import SUBSET_FILE, open_encoder, top1_correct
from ..training.settings import FINETUNE_RECIPE
from .shipped import weights_digest


def matching_preset(mcfg: ModelConfig) -> str:
    """The preset with the encoder's dimensions (whose fine-tuning defaults the run takes);
    "vit-b" (the paper's recipe) for any other."""
    dims = ("img_size", "patch_size", "embed_dim", "depth", "num_heads")
    for name, preset in PRESETS.items():
        if all(preset.get(k) == getattr(mcfg, k) for k in dims):
            return name
    return "vit-b"


def finetune_config(checkpoint: str | os.PathLike, **fields: Any) -> TrainConfig:
    """The fine-tuning run of ``checkpoint``: its encoder's settings (all of them, as model
    overrides), MAE's recipe (:data:`FINETUNE_RECIPE` and the preset's fine-tuning defaults),
    then ``fields`` (any :class:`TrainConfig` field; ``model_overrides`` are added)."""
    mcfg = open_encoder(str(checkpoint)).cfg
    model = {k: v for k, v in mcfg.to_dict().items() if k != "kind"}
    model.update(fields.pop("model_overrides", {}) or {})
    return TrainConfig(**{**FINETUNE_RECIPE, "kind": mcfg.kind, "preset": matching_preset(mcfg),
                          "objective": "finetune", "pretrained": str(checkpoint),
                          "out": f"runs/finetune-{mcfg.kind}", **fields}, model_overrides=model)


def finetune(cfg: TrainConfig) -> TrainResult:
    """Fine-tune as ``cfg`` says (the one loop: checkpoints, resume, SIGTERM, DDP), then write
    the run's ``model.safetensors`` (rank 0): the classifier of its last checkpoint, in timm's
    key names, with the class names and step in its metadata."""
    result = run_training(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        export_classifier(result.out)
    return result


def export_classifier(out: str | os.PathLike) -> str:
    """``model.safetensors`` of run directory ``out`` from its ``checkpoint.pt``."""
    files = run_files(out)
    ck = read_checkpoint(files.checkpoint, map_location="cpu", mmap=True)
    model = load_classifier(files.checkpoint)
    save_classifier(model, files.weights, step=ck.get("step"),
                    pretrained=(ck.get("train_config") or {}).get("pretrained"))
    return str(files.weights)


# ----------------------------------------------------------------------------- the series
ALL_BLOCKS = "all"  # tune_blocks of full fine-tuning


def series_runs(tune_blocks: Sequence[int | str], label_fractions: Sequence[float]
                ) -> list[tuple[int | str, float]]:
    """The (tune_blocks, label_fraction) runs of a series: each k on every label (MAE Fig. 9),
    then each label fraction with every block tuned (MFF's few-shot table); the full run once."""
    partial = [(k if k == ALL_BLOCKS else int(k), 1.0) for k in tune_blocks]
    few_shot = [(ALL_BLOCKS, float(f)) for f in label_fractions]
    return list(dict.fromkeys(partial + few_shot))


def run_name(tune_blocks: int | str, label_fraction: float) -> str:
    """'k1-f1', 'kall-f0.01': a run's key in :class:`FinetuneSeries`."""
    return f"k{tune_blocks}-f{float(label_fraction):g}"


@dataclass
class FinetuneSeries(AsDict):
    """Held-out top-1 of models fine-tuned with the last k blocks tuned (MAE Fig. 9; every label)
    and with a share of the labels (MFF's few-shot table; every block tuned), image by image:
    every run is evaluated on the same held-out images, so runs and models pair per image."""

    tune_blocks: list[int | str]  # k of each partial run ("all": every block), label fraction 1
    label_fractions: list[float]  # of each few-shot run, every block tuned
    correct: dict[str, dict[str, list[bool]]]  # model -> run_name -> per held-out image, top-1 right
    depth: dict[str, int]  # model -> its encoder's blocks
    labelled: dict[str, int]  # run_name -> labelled training images the run draws from
    num_classes: int
    steps: int  # of every run
    batch_size: int
    seed: int
    # model -> run_name -> wall seconds of its fine-tuning and scoring (a reused run: loading)
    seconds: dict[str, dict[str, float]]

    @property
    def models(self) -> list[str]:
        return list(self.correct)

    @property
    def n_test(self) -> int:
        return len(next(iter(next(iter(self.correct.values())).values())))

    def correct_at(self, model: str, tune_blocks: int | str = ALL_BLOCKS,
                   label_fraction: float = 1.0) -> np.ndarray:
        """[held-out images] 0/1 of one run."""
        return np.asarray(self.correct[model][run_name(tune_blocks, label_fraction)], dtype=float)

    def top1(self, model: str, tune_blocks: int | str = ALL_BLOCKS,
             label_fraction: float = 1.0) -> float:
        return float(self.correct_at(model, tune_blocks, label_fraction).mean())

    def blocks_curve(self) -> dict[str, list[float]]:
        """model -> top-1 per k of ``tune_blocks`` (every label)."""
        return {m: [self.top1(m, k) for k in self.tune_blocks] for m in self.models}

    def fractions_curve(self) -> dict[str, list[float]]:
        """model -> top-1 per label fraction (every block tuned)."""
        return {m: [self.top1(m, ALL_BLOCKS, f) for f in self.label_fractions]
                for m in self.models}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "FinetuneSeries":
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls)})


def series_run_dir(runs_dir: str | os.PathLike, model: str, cfg: TrainConfig) -> Path:
    """One folder per (model, settings): the run's k, label fraction, steps, batch and seed in
    its name, and a digest of the pretrained weights and every other setting, so running the
    series again reuses exactly the finished runs it would train."""
    settings = {**cfg.to_dict(), "out": None, "resume": None, "progress": None,
                "pretrained": weights_digest(open_encoder(cfg.pretrained).state_dict())}
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()
    slug = "".join(c if c.isalnum() else "-" for c in model.lower())
    return Path(runs_dir) / (f"{slug}-{run_name(cfg.tune_blocks, cfg.label_fraction)}-s{cfg.steps}"
                             f"-b{cfg.batch_size}-seed{cfg.seed}-{digest[:10]}")


def labelled_images(run: Path, data, fraction: float) -> int:
    """The labelled training images run ``run`` drew from: its ``label_subset.json`` (a label
    fraction below 1), else every image of ``data``."""
    return json.loads((run / SUBSET_FILE).read_text())["images"] if fraction < 1 else len(data)


def finetune_series(checkpoints: Mapping[str, str | os.PathLike],
                    tune_blocks: Sequence[int | str] = (0, 1, ALL_BLOCKS),
                    label_fractions: Sequence[float] = (0.01, 1.0), *,
                    data: str | os.PathLike = "shapes", eval_images: int = 512, seed: int = 0,
                    runs_dir: str | os.PathLike = "runs/finetune-series",
                    **fields: Any) -> FinetuneSeries:
    """Fine-tune every checkpoint ({model name: path}) once per run of :func:`series_runs` on
    ``data`` -- the last k blocks on every label, and every block on each label fraction -- and
    classify the same ``eval_images`` held-out images with each (the images the runs' own
    ``eval_top1`` would use: ``fixed_batch(data, size, n, "heldout", 0)``).

    ``fields``: any :class:`TrainConfig` field for every run (``steps``, ``batch_size``,
    ``mixup=0``, ...; unset: the recipe's and the preset's fine-tuning defaults). Runs go to
    :func:`series_run_dir` under ``runs_dir`` and are resumed, so a finished run is reused.
    """
    if not checkpoints:
        raise ValueError("finetune_series needs at least one checkpoint")
    tune_blocks = [k if k == ALL_BLOCKS else int(k) for k in tune_blocks]
    runs = series_runs(tune_blocks, label_fractions)
    out = dict(correct={}, depth={}, labelled={}, seconds={})
    heldout = None
    for model, checkpoint in checkpoints.items():
        for k, fraction in runs:
            cfg = resolve(finetune_config(checkpoint, **{
                "log_every": 10 ** 6, **fields, "data": str(data), "seed": seed,
                "tune_blocks": k, "label_fraction": fraction, "eval_images": 0,
                "resume": IF_ANY, "progress": False}))
            cfg = dataclasses.replace(cfg, out=str(series_run_dir(runs_dir, model, cfg)))
            start = time.perf_counter()
            finetune(cfg)
            classifier = load_classifier(cfg.out)
            if heldout is None:  # every model's held-out images: the same
                heldout = fixed_batch(data, classifier.cfg.img_size, eval_images, "heldout", 0)
                train_set = build_dataset(data, classifier.cfg.img_size, "train", False)
            name = run_name(k, fraction)
            out["correct"].setdefault(model, {})[name] = top1_correct(classifier, *heldout).tolist()
            out["seconds"].setdefault(model, {})[name] = round(time.perf_counter() - start, 1)
            out["labelled"][name] = labelled_images(Path(cfg.out), train_set, fraction)
        out["depth"][model] = classifier.cfg.depth
    return FinetuneSeries(tune_blocks=tune_blocks,
                          label_fractions=[float(f) for f in label_fractions],
                          num_classes=int(classifier.head.out_features), steps=cfg.steps,
                          batch_size=cfg.batch_size, seed=seed, **out)


def series_claims(series: FinetuneSeries | Sequence[FinetuneSeries], mae: str = "MAE",
                  mff: str = "MFF-MAE") -> list:
    """The series' two claims (``findings``), over one series or one per seed, each paired image
    by image on the held-out images: MAE's last block alone against head-only and full
    fine-tuning (the runs k = 0, 1 and all), and MFF-MAE's lead over MAE with the smallest label
    fraction against all labels. A claim whose runs the series lacks is "not testable"."""
    from . import findings

    seeds = [series] if isinstance(series, FinetuneSeries) else list(series)
    blocks, fractions = set(seeds[0].tune_blocks), sorted(seeds[0].label_fractions)
    if {0, 1, ALL_BLOCKS} <= blocks:
        partial = findings.partial_ft_one_block_recovers_gap(
            *([s.correct_at(mae, k) for s in seeds] for k in (0, 1, ALL_BLOCKS)), name=mae)
    else:
        partial = findings.not_measured(findings.partial_ft_text(mae), f"the series tunes "
                                        f"{sorted(map(str, blocks))} blocks, not 0, 1 and all")
    if len(fractions) >= 2 and fractions[-1] == 1.0:
        few = fractions[0]
        lead = findings.mff_advantage_grows_as_labels_shrink(
            *([s.correct_at(m, ALL_BLOCKS, f) for s in seeds] for f in (few, 1.0)
              for m in (mae, mff)), fraction=few)
    else:
        lead = findings.not_measured(findings.FEW_SHOT_TEXT, f"the series' label fractions "
                                     f"{fractions} lack a share below 1 or all the labels")
    return [partial, lead]
