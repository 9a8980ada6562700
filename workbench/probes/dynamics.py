"""Any probe over training: :func:`over_training` measures a probe at every weight snapshot of a
run (``train --set snapshot_steps=log``: ``snapshots/step_NNNNNN.safetensors``), on the same
fixed images and masks at every step, and keeps each measurement in the run's ``probe_cache/``,
so a second call reads JSON instead of measuring.

    r = over_training("runs/mff-tiny", "reconstruction_loss", mask_ratio=0.9)
    r.steps, r.names, r.values          # [T], [K], [T, K]: the probe's headline numbers per step
    r.results[i]                        # the probe's full result at r.steps[i] (JSON-ready)

``probe`` is a name of :data:`OVER_TRAINING_PROBES` (settings as keyword arguments, defaults in
each entry) or any callable ``model -> numbers`` (a number, a dict of numbers, a result with
``to_dict()``), called as ``probe(model, **settings)``.

The cache key of a measurement is the sha256 of (the snapshot file's sha256, the probe's name and
version -- a callable's qualified name and code --, its settings, and for ``cka_to_final`` the
final snapshot's sha256): a snapshot rewritten, other settings or another probe measure anew.
A callable that differs from another only in what it closes over needs its own ``name=``.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..core.io import RunFiles, atomic_write_text, run_files
from ..core.registry import Registry
from ..core.results import AsDict, to_jsonable

CACHE_FORMAT = 1  # bumped when a cached file's layout changes: older files are measured anew


@dataclass(frozen=True)
class OverTrainingProbe:
    """A probe as :func:`over_training` runs it: ``measure(model, inputs, **settings)`` -> its
    full result (JSON-ready), ``headline(result)`` -> {name: number} drawn over the steps."""

    name: str
    measure: Callable[..., Any]
    headline: Callable[[dict], dict[str, float]]
    defaults: dict[str, Any]
    needs_final: bool = False  # measured against the run's last snapshot (inputs.final)
    version: int = 1  # bumped when the measurement changes: cached numbers are not reused
    any_settings: bool = False  # a callable of the user's: every setting goes to it


OVER_TRAINING_PROBES: Registry[OverTrainingProbe] = Registry("over-training probe")


def over_training_probe(name: str, headline: Callable[[dict], dict[str, float]],
                        needs_final: bool = False, version: int = 1, **defaults: Any):
    """Decorator: register ``measure(model, inputs, **settings)`` as over-training probe
    ``name``, with its settings' ``defaults`` (the only settings it takes)."""
    def add(measure):
        OVER_TRAINING_PROBES.register(name)(OverTrainingProbe(
            name, measure, headline, dict(defaults), needs_final, version))
        return measure
    return add


@dataclass
class ProbeInputs:
    """The fixed data of one :func:`over_training` call, made once and shown to every snapshot:
    the same images (and, by the probes' seeds, the same masks) at each step."""

    data: str  # the run's image set (config.json's ``data``; "builtin" without one)
    img_size: int
    final: Any = None  # the model of the run's last snapshot (probes with ``needs_final``)
    made: dict = field(default_factory=dict)

    def images(self, n: int, seed: int = 0, data: str | None = None) -> torch.Tensor:
        """[n, 3, S, S] held-out images of ``data`` (None: the run's), chosen by ``seed``."""
        return self.labelled(n, "heldout", seed, data or self.data)[0]

    def labelled(self, n: int, split: str, seed: int = 0, data: str | None = None):
        """(imgs [n, 3, S, S], labels [n]) of ``split`` of ``data``, made once per call."""
        from ..data import fixed_batch

        key = (data or self.data, split, n, seed)
        if key not in self.made:
            self.made[key] = fixed_batch(key[0], self.img_size, n, split, seed)
        return self.made[key]


@dataclass
class OverTraining(AsDict):
    """A probe at every snapshot of a run."""

    probe: str
    steps: list[int]  # [T] training steps of the snapshots measured
    names: list[str]  # [K] the probe's headline numbers
    values: np.ndarray  # [T, K] float64 (nan where a step lacks a name)
    results: list[dict]  # [T] the probe's full result per step, JSON-ready
    settings: dict  # the settings measured with, defaults filled in
    run: str
    cached: list[bool]  # [T] True: read from probe_cache/, False: measured by this call

    @classmethod
    def from_dict(cls, d: dict) -> "OverTraining":
        """The inverse of ``to_dict()`` (e.g. a result read back from a JSON file)."""
        return cls(**{**d, "values": np.asarray(d["values"], dtype=np.float64)})

    def series(self, name: str | None = None) -> np.ndarray:
        """[T] one headline number over the steps (``name`` may be left out when there is one)."""
        if name is None and len(self.names) == 1:
            name = self.names[0]
        if name not in self.names:
            raise ValueError(f"{self.probe} gives {self.names}; name one of them, got {name!r}")
        return self.values[:, self.names.index(name)]


# ----------------------------------------------------------------------------- the measuring
def over_training(run_dir: str | os.PathLike, probe: str | Callable[..., Any], *,
                  steps: list[int] | None = None, cache: bool = True, device: str = "cpu",
                  name: str | None = None, progress: bool = False,
                  **settings: Any) -> OverTraining:
    """``probe`` (a name of :data:`OVER_TRAINING_PROBES` or a callable ``model -> numbers``)
    at every weight snapshot of ``run_dir`` (or at the ``steps`` given), with ``settings``;
    each measurement read from / written to ``probe_cache/`` unless ``cache=False``."""
    from tqdm.auto import tqdm

    files = run_files(run_dir)
    series = snapshot_series(files)
    chosen = list(series) if steps is None else [int(s) for s in steps]
    missing = [s for s in chosen if s not in series]
    if missing:
        raise ValueError(f"no snapshot of steps {missing} in {files.snapshots}; it holds steps "
                         f"{list(series)}")
    spec = resolve_probe(probe, name)
    full = full_settings(spec, settings, files)
    digests = SnapshotDigests(files)
    final = digests.of(series[max(series)]) if spec.needs_final else None
    measured = Measurer(spec, full, files, series, device)
    results, cached = [], []
    for step in tqdm(chosen, desc=spec.name, disable=not progress):
        key = cache_key(spec, full, digests.of(series[step]), final)
        path = files.probe_cache / safe_name(spec.name) / f"step_{step:06d}-{key[:16]}.json"
        hit = read_cached(path, key) if cache else None
        cached.append(hit is not None)
        if hit is None:
            hit = measured(series[step])
            if cache:
                atomic_write_text(path, json.dumps({"format": CACHE_FORMAT, "key": key,
                                                    "probe": spec.name, "step": step,
                                                    "settings": full, **hit}))
        results.append(hit)
    digests.save()
    return collect(spec.name, chosen, results, full, files, cached)


def over_training_series(runs: dict[str, Any], probes: dict[str, dict], *,
                         steps: list[int] | None = None, progress: bool = False
                         ) -> dict[str, dict[str, list[OverTraining]]]:
    """Several probes over several runs: {probe: {label: [OverTraining, one per run]}} of
    every ``{probe: settings}`` of ``probes`` at the ``steps`` given (None: every snapshot) of
    ``runs`` ({label: run folder, or a list of them: seeds}); a probe a model does not have (an
    MAE's fusion weights) is left out for that model."""
    from .fusion import NoFusionError

    series: dict[str, dict[str, list[OverTraining]]] = {}
    for probe, settings in probes.items():
        for label, seeds in runs.items():
            seeds = list(seeds) if isinstance(seeds, (list, tuple)) else [seeds]
            try:
                found = [over_training(run, probe, steps=steps, progress=progress, **settings)
                         for run in seeds]
            except NoFusionError:
                continue
            series.setdefault(probe, {})[label] = found
    return series


def snapshot_series(files: RunFiles) -> dict[int, Path]:
    """{step: snapshot file} of a run; a clear error for a run trained without snapshots."""
    series = files.snapshot_series()
    if not series:
        raise FileNotFoundError(f"{files.root} holds no weight snapshots ({files.snapshots}/"
                                f"step_NNNNNN.safetensors): train it with --set "
                                f"snapshot_steps=log (or a list of steps)")
    return series


class SnapshotModels:
    """The models of several runs at the weight-snapshot steps they share, loaded when first
    asked for: ``models[step]`` -> {label: model} (eval mode). ``keep``: at most that many steps
    held in memory, the least recently shown dropped first (None: every step once loaded)."""

    def __init__(self, runs: dict[str, str | os.PathLike], device: str = "cpu",
                 keep: int | None = None):
        self.series = {label: snapshot_series(run_files(run)) for label, run in runs.items()}
        shared = set.intersection(*(set(s) for s in self.series.values())) if runs else set()
        if not shared:
            raise ValueError("the runs share no snapshot step: "
                             + "; ".join(f"{k}: {list(v)}" for k, v in self.series.items()))
        self.steps = sorted(shared)  # [T]
        self.device, self.keep, self.loaded = device, keep, {}

    def __getitem__(self, step: int) -> dict[str, torch.nn.Module]:
        from ..checkpoints import load_checkpoint

        if step not in self.steps:
            raise KeyError(f"no snapshot of step {step}; the runs share steps {self.steps}")
        models = self.loaded.pop(step, None)  # re-inserted last: the most recently shown
        if models is None:
            models = {label: load_checkpoint(s[step], map_location=self.device).eval()
                      for label, s in self.series.items()}
        self.loaded[step] = models
        while self.keep is not None and len(self.loaded) > max(1, self.keep):
            self.loaded.pop(next(iter(self.loaded)))
        return models


class Measurer:
    """Loads a snapshot and measures it; the fixed inputs (and the final model) are made at the
    first snapshot measured, so a call answered from the cache loads nothing."""

    def __init__(self, spec: OverTrainingProbe, settings: dict, files: RunFiles,
                 series: dict[int, Path], device: str):
        self.spec, self.settings, self.files = spec, settings, files
        self.series, self.device, self.inputs = series, device, None

    def load(self, path: Path):
        from ..checkpoints import load_checkpoint

        return load_checkpoint(path, map_location=self.device)

    def __call__(self, path: Path) -> dict:
        """{"result": the probe's full result, "values": {name: number}} of one snapshot."""
        model = self.load(path)
        if self.inputs is None:
            final = self.load(self.series[max(self.series)]) if self.spec.needs_final else None
            self.inputs = ProbeInputs(run_data(self.files), model.cfg.img_size, final)
        result = to_jsonable(self.spec.measure(model, self.inputs, **self.settings))
        return {"result": result, "values": {k: float(v) for k, v in
                                             self.spec.headline(result).items()}}


def run_data(files: RunFiles) -> str:
    """The image set a run trained on (its config.json), "builtin" without one."""
    saved = files.read_settings()
    return str((saved[1] if saved else {}).get("data") or "builtin")


def resolve_probe(probe: str | Callable[..., Any], name: str | None) -> OverTrainingProbe:
    """A registered probe by name, or a callable ``model -> numbers`` made into one (its name:
    ``name``, else its qualified name; its version: a digest of its code)."""
    if isinstance(probe, str):
        return OVER_TRAINING_PROBES.get(probe)
    if not callable(probe):
        raise TypeError(f"probe must be a name of {OVER_TRAINING_PROBES.names()} or a callable "
                        f"model -> numbers, got {type(probe).__name__}")
    label = name or f"{getattr(probe, '__module__', '')}.{getattr(probe, '__qualname__', probe)}"
    code = getattr(probe, "__code__", None)
    version = code_digest(code) if code is not None else 0
    return OverTrainingProbe(label, lambda model, _inputs, **kw: probe(model, **kw),
                             flat_numbers, {}, version=version, any_settings=True)


def code_digest(code) -> int:
    """A number that changes when a function's code does (bytecode and constants)."""
    text = code.co_code + repr(code.co_consts).encode() + repr(code.co_names).encode()
    return int(hashlib.sha256(text).hexdigest()[:12], 16)


def full_settings(spec: OverTrainingProbe, settings: dict, files: RunFiles) -> dict:
    """The settings measured with: the probe's defaults, replaced by ``settings`` (a registered
    probe refuses a name it does not take), ``data=None`` made the run's own, JSON-ready."""
    if not spec.any_settings:  # a registered probe: its defaults are its settings
        unknown = sorted(set(settings) - set(spec.defaults))
        if unknown:
            raise ValueError(f"over-training probe {spec.name!r} takes the settings "
                             f"{sorted(spec.defaults)}, not {unknown}")
    full = {**spec.defaults, **settings}
    if "data" in full and full["data"] is None:
        full["data"] = run_data(files)
    return to_jsonable(full)


def cache_key(spec: OverTrainingProbe, settings: dict, digest: str, final: str | None) -> str:
    """sha256 over what the numbers depend on: the snapshot, probe, version and settings."""
    text = json.dumps({"format": CACHE_FORMAT, "snapshot": digest, "probe": spec.name,
                       "version": spec.version, "settings": settings, "final": final},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:80]


def read_cached(path: Path, key: str) -> dict | None:
    """The cached {"result", "values"} of ``path`` when it holds ``key`` (None otherwise, or
    for a file that cannot be read: it is measured and written again)."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if saved.get("key") != key or saved.get("format") != CACHE_FORMAT:
        return None
    return {"result": saved["result"], "values": saved["values"]}


class SnapshotDigests:
    """sha256 of each snapshot file, kept in ``probe_cache/digests.json`` by (name, size,
    mtime): a file rewritten (atomically: a new mtime) is hashed again, others are not."""

    def __init__(self, files: RunFiles):
        self.path = files.probe_cache / "digests.json"
        try:
            self.known = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.known = {}
        self.changed = False

    def of(self, path: Path) -> str:
        st = path.stat()
        stamp = [st.st_size, st.st_mtime_ns]
        entry = self.known.get(path.name)
        if entry is None or entry[:2] != stamp:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            entry = self.known[path.name] = [*stamp, h.hexdigest()]
            self.changed = True
        return entry[2]

    def save(self) -> None:
        if self.changed:
            atomic_write_text(self.path, json.dumps(self.known, indent=1))


def collect(probe: str, steps: list[int], results: list[dict], settings: dict,
            files: RunFiles, cached: list[bool]) -> OverTraining:
    """The per-step results as an :class:`OverTraining` (names in their first step's order)."""
    names: list[str] = []
    for r in results:
        names += [k for k in r["values"] if k not in names]
    values = np.array([[r["values"].get(k, np.nan) for k in names] for r in results],
                      dtype=np.float64).reshape(len(results), len(names))
    return OverTraining(probe, list(steps), names, values, [r["result"] for r in results],
                        settings, str(files.root), cached)


def flat_numbers(result: Any, prefix: str = "") -> dict[str, float]:
    """The numbers of a JSON-ready result, flattened: 0.5 -> {"value": 0.5}; {"a": {"b": [1,
    2]}} -> {"a/b/0": 1, "a/b/1": 2} (strings and other leaves are skipped)."""
    if isinstance(result, bool):
        return {}
    if isinstance(result, (int, float)):
        return {prefix or "value": float(result)}
    items = (result.items() if isinstance(result, dict) else
             enumerate(result) if isinstance(result, list) else ())
    found: dict[str, float] = {}
    for k, v in items:
        found.update(flat_numbers(v, f"{prefix}/{k}" if prefix else str(k)))
    return found


# ------------------------------------------------------------------------- the registered probes
def per_block(values) -> dict[str, float]:
    """[L] numbers -> {"block 0": v0, ...}."""
    return {f"block {i}": float(v) for i, v in enumerate(values)}


@over_training_probe("reconstruction_loss", lambda r: {"loss": r["loss"]},
                     mask_ratio=0.75, mask_strategy="random", images=64, seed=0, data=None)
def _reconstruction_loss(model, inputs, mask_ratio, mask_strategy, images, seed, data):
    """The model's masked reconstruction loss on fixed held-out images and seeded masks."""
    from .reconstruction import reconstruct

    r = reconstruct(model, inputs.images(images, seed, data), mask_ratio, mask_strategy, seed)
    return {"loss": r.loss, "mask_ratio": mask_ratio, "images": images}


@over_training_probe("frequency", lambda r: dict(zip(r["names"], (c[-1] for c in r["curves"]))),
                     images=64, seed=0, data=None, sublayers=False)
def _frequency(model, inputs, images, seed, data, sublayers):
    """Δ log amplitude of every layer (Park & Kim); headline: each layer's highest frequency."""
    from .fourier import frequency_response

    return frequency_response(model, inputs.images(images, seed, data), sublayers=sublayers)


def _hessian_headline(r: dict) -> dict[str, float]:
    eigs = np.asarray(r["eigenvalues"], dtype=np.float64)  # [n_batches, k]
    return {f"top{i + 1}": float(v) for i, v in enumerate(eigs.mean(axis=0))}


@over_training_probe("hessian_top", _hessian_headline, k=3, images=16, batches=1, seed=0,
                     data=None, params="all", tol=1e-3, max_iter=100)
def _hessian_top(model, inputs, k, images, batches, seed, data, params, tol, max_iter):
    """Top-k Hessian eigenvalues of the reconstruction loss (batch i masked with seed + i);
    headline: each rank's mean over the batches."""
    from .hessian import hessian_spectrum, spectrum_summary

    imgs = inputs.images(images * batches, seed, data).split(images)
    eigs = hessian_spectrum(model, list(imgs), k=k, params=params, seed=seed, tol=tol,
                            max_iter=max_iter, progress=False)  # [batches, k]
    return {"eigenvalues": eigs, **spectrum_summary(eigs)}


@over_training_probe("hessian_trace", lambda r: {"trace": r["estimate"]}, num_samples=32,
                     images=16, seed=0, data=None, params="all")
def _hessian_trace(model, inputs, num_samples, images, seed, data, params):
    """Hutchinson trace of the reconstruction loss's Hessian (fixed masks and probes)."""
    from ..linalg import hessian_trace
    from ..models import eval_mode
    from .curvature import mae_loss_fn
    from .hessian import select_parameters

    with eval_mode(model):
        loss = mae_loss_fn(model, inputs.images(images, seed, data), seed)
        return hessian_trace(loss, select_parameters(model, params), num_samples, seed)


@over_training_probe("linear_probe", lambda r: {"accuracy": r["accuracy"]}, pool="mean",
                     train=512, test=512, data="shapes", seed=0, C=1.0)
def _linear_probe(model, inputs, pool, train, test, data, seed, C):
    """Held-out accuracy of a linear probe on frozen pooled features (the shapes' labels)."""
    from .linear import linear_probe

    sets = inputs.labelled(train, "train", seed, data), inputs.labelled(test, "heldout", seed, data)
    return {"accuracy": linear_probe(model, *sets, pool=pool, C=C, seed=seed)}


@over_training_probe("knn_probe", lambda r: {"accuracy": r["accuracy"]}, pool="mean", k=20,
                     train=512, test=512, data="shapes", seed=0)
def _knn_probe(model, inputs, pool, k, train, test, data, seed):
    """Held-out accuracy of a kNN vote on frozen pooled features."""
    from .linear import knn_probe

    sets = inputs.labelled(train, "train", seed, data), inputs.labelled(test, "heldout", seed, data)
    return {"accuracy": knn_probe(model, *sets, k=k, pool=pool)}


def _layer_headline(r: dict) -> dict[str, float]:
    return {f"{probe} block {layer}": float(a) for probe, accs in r["accuracy"].items()
            for layer, a in zip(r["layers"], accs)}


@over_training_probe("layer_probes", _layer_headline, train=512, test=512, data="shapes", seed=0)
def _layer_probes(model, inputs, train, test, data, seed):
    """Linear and kNN accuracy of every block's features (cls and mean-pooled)."""
    from .layers import layer_probes

    return layer_probes(model, inputs.labelled(train, "train", seed, data),
                        inputs.labelled(test, "heldout", seed, data), seed=seed)


@over_training_probe("cka_to_final", lambda r: per_block(r["cka"]), needs_final=True,
                     images=64, seed=0, data=None, pool="mean")
def _cka_to_final(model, inputs, images, seed, data, pool):
    """Linear CKA of each block's features with the same block of the run's last snapshot."""
    from .cka import layer_features, linear_cka

    imgs = inputs.images(images, seed, data)
    key = ("final features", images, seed, data, pool)
    if key not in inputs.made:
        inputs.made[key] = layer_features(inputs.final, imgs, pool=pool)
    mine = layer_features(model, imgs, pool=pool)
    return {"cka": [linear_cka(a, b) for a, b in zip(mine, inputs.made[key])]}


@over_training_probe("attention_distance",
                     lambda r: per_block(np.asarray(r["distance_px"]).mean(axis=1)),
                     images=32, seed=0, data=None)
def _attention_distance(model, inputs, images, seed, data):
    """Mean attention distance (and entropy, NMI) per block and head; headline: the distance
    in pixels per block, averaged over heads."""
    from .attention import attention_statistics

    return attention_statistics(model, inputs.images(images, seed, data))


@over_training_probe("fusion", lambda r: {f"block {l}": w for l, w in zip(r["layers"],
                                                                          r["weights"])})
def _fusion(model, inputs):
    """MFF's normalised fusion weights (an MAE has none: NoFusionError)."""
    from .fusion import fusion_state

    return fusion_state(model)
