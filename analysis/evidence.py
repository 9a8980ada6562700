"""The evidence profile: the papers' claims over training seeds, minibatches and mask ratios.

    python analysis/evidence.py                    # CPU profile into evidence/ (make evidence)
    python analysis/evidence.py --profile gpu      # the same plan at the gpu-small preset
    python analysis/evidence.py --out DIR --jobs 2

The plan is a set of jobs -- pretrain MAE and MFF-MAE per seed, the supervised fusion comparison
per seed, a short MAE run per (mask ratio, seed), then per seed the frequency, linear-probe and
Hessian measurements on the finished runs -- run ``--jobs`` at a time with the cores split
between them. Each job writes ``OUT/jobs/<job>.json`` when it finishes (atomically) and training
runs checkpoint as they go, so running the command again resumes: finished jobs are skipped and a
killed training run continues from its checkpoint. A line is printed as each job ends, and at the
end ``OUT/claims.json``, ``OUT/findings.md`` and ``OUT/forest.png`` are written through
``workbench.experiments.findings`` -- the same claim functions the notebooks call on one seed.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import json
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from workbench.probes.learning import CRITERION_TEST, CRITERION_TRAIN
from workbench.training.settings import LEARNING_REGIME

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Profile:
    """Sizes of the plan. ``seeds`` pretraining seeds per model; every per-seed measurement uses
    the pair (MAE seed s, MFF seed s)."""

    name: str
    preset: str = "tiny"
    device: str = "cpu"
    data: str = LEARNING_REGIME["data"]  # pretraining images: the CPU learning regime's
    probe_data: str = "shapes"  # labelled set of the probes and the supervised comparison
    seeds: tuple[int, ...] = (0, 1, 2)
    steps: int | None = LEARNING_REGIME["steps"]  # pretraining steps (None: the preset's)
    supervised_batch: int = 32  # the lr, steps and seed are the pretraining run's
    frequency_images: int = 256
    # the learning criterion's sizes (probes.learning): every probe, trained and at init
    probe_train: int = CRITERION_TRAIN
    probe_test: int = CRITERION_TEST
    hessian_batches: int = 6  # per seed, each also on the initialisation: 18 + 18 over 3 seeds
    hessian_batch_size: int = 16
    hessian_k: int = 5
    hessian_tol: float = 1e-2
    # each ratio trained as the pretraining runs are (600 steps of 64), so that each can pass the
    # learning criterion; three ratios (one below MAE's 0.6-0.9 band, two in it) to fit the
    # 120-minute budget (a 600-step run takes ~8 min of one core)
    sweep_ratios: tuple[float, ...] = (0.25, 0.75, 0.9)
    sweep_seeds: tuple[int, ...] = (0, 1, 2)  # 3: a t interval over 2 seeds has 1 df
    sweep_steps: int = LEARNING_REGIME["steps"]
    sweep_batch: int = 64


PROFILES = {
    "cpu": Profile("cpu"),
    "gpu": Profile("gpu", preset="gpu-small", device="cuda", seeds=(0, 1, 2, 3, 4), steps=None,
                   supervised_batch=256, frequency_images=1024, probe_train=4096,
                   probe_test=2048, hessian_batches=8, hessian_batch_size=64, hessian_tol=1e-3,
                   sweep_ratios=(0.1, 0.25, 0.4, 0.6, 0.75, 0.9), sweep_seeds=(0, 1, 2),
                   sweep_steps=1000, sweep_batch=256),
    # for tests: every job on the smallest sizes that still give every claim its inputs
    "smoke": Profile("smoke", seeds=(0, 1), steps=2, supervised_batch=8, frequency_images=8,
                     probe_train=96, probe_test=16, hessian_batches=1, hessian_batch_size=4,
                     hessian_k=2, hessian_tol=0.5, sweep_ratios=(0.25, 0.75),
                     sweep_seeds=(0,), sweep_steps=2, sweep_batch=8),
}


# ----------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class Job:
    stage: str  # pretrain | supervised | sweep | measure | hessian
    seed: int
    kind: str = ""  # mae | mff for pretrain / hessian
    ratio: float | None = None  # sweep
    cost: float = 1.0  # rough relative run time: the costliest ready job starts first

    @property
    def name(self) -> str:
        parts = [self.stage, self.kind, f"r{round(self.ratio * 100)}" if self.ratio else "",
                 f"seed{self.seed}"]
        return "-".join(p for p in parts if p)

    def needs(self) -> list[str]:
        if self.stage == "measure":
            return [Job("pretrain", self.seed, k).name for k in ("mae", "mff")]
        if self.stage == "hessian":
            return [Job("pretrain", self.seed, self.kind).name]
        return []


def plan(p: Profile) -> list[Job]:
    jobs = [Job("pretrain", s, k, cost=6) for s in p.seeds for k in ("mae", "mff")]
    jobs += [Job("supervised", s, cost=4) for s in p.seeds]
    jobs += [Job("sweep", s, ratio=r, cost=3 + 3 * (1 - r)) for s in p.sweep_seeds
             for r in p.sweep_ratios]
    jobs += [Job("hessian", s, k, cost=5) for s in p.seeds for k in ("mae", "mff")]
    jobs += [Job("measure", s, cost=1) for s in p.seeds]
    return jobs


def run_path(out: Path, kind: str, seed: int) -> Path:
    return out / "runs" / f"{kind}-seed{seed}"


def pretrain_config(p: Profile, kind: str, seed: int, out: Path):
    from workbench.training import TrainConfig

    return TrainConfig(kind=kind, preset=p.preset, data=p.data, steps=p.steps, seed=seed,
                       device=p.device, out=str(run_path(out, kind, seed)), resume=True,
                       snapshot_every=0, progress=False)


# ----------------------------------------------------------------------------- the jobs
def run_job(job: Job, p: Profile, out: Path) -> dict:
    """Do one job (in a worker process) and return its JSON-ready result."""
    return STAGES[job.stage](job, p, out)


def do_pretrain(job: Job, p: Profile, out: Path) -> dict:
    from workbench.training import train

    res = train(pretrain_config(p, job.kind, job.seed, out))
    return {"checkpoint": res.checkpoint, "loss": res.loss, "heldout_loss": res.heldout_loss}


def do_supervised(job: Job, p: Profile, out: Path) -> dict:
    from workbench.training.supervised import SupervisedFusionConfig, train_supervised_fusion

    cfg = SupervisedFusionConfig.matching(pretrain_config(p, "mff", job.seed, out),
                                          batch_size=p.supervised_batch, data=p.probe_data,
                                          progress=False)
    return {"config": dataclasses.asdict(cfg), **train_supervised_fusion(cfg).to_dict()}


def do_sweep(job: Job, p: Profile, out: Path) -> dict:
    """One sweep point (``sweeps.measure_at_ratio``: the masked losses and the linear probe, here
    on the criterion's images) with its control: the same probe on the run's initialisation,
    image by image -- the learning check of that run."""
    import numpy as np

    from workbench.checkpoints import load_checkpoint
    from workbench.data import fixed_batch
    from workbench.probes import probe_correct
    from workbench.probes.learning import CRITERION_POOL, criterion_sets, initial_model, paired_gain
    from workbench.experiments.sweeps import measure_at_ratio, train_at_ratio

    ckpt = train_at_ratio(job.ratio, p.sweep_steps, p.sweep_batch, "mae", p.preset, job.seed,
                          out / "runs" / "sweep", p.data)
    model, init = load_checkpoint(ckpt), initial_model(Path(ckpt).parent)
    size = model.cfg.img_size
    train_set, test_set = criterion_sets(size, p.probe_train, p.probe_test, job.seed,
                                         p.probe_data)
    heldout = fixed_batch(p.data, size, 256, "heldout", job.seed)[0]
    point = measure_at_ratio(model, job.ratio, (heldout, train_set, test_set), job.seed)
    trained = np.asarray(point["probe_correct"])
    start = probe_correct(init, train_set, test_set, CRITERION_POOL, seed=job.seed)
    return {**point, "init_correct": start.tolist(),
            "learning": learning_record(trained, start, *paired_gain(trained, start))}


def learning_record(trained, start, gain: float, ci: list[float]) -> dict:
    """The learning criterion's numbers for a run (``probes.learning``), JSON-ready."""
    from workbench.probes.learning import passes

    return {"trained": float(trained.mean()), "init": float(start.mean()), "gain": gain,
            "ci": [float(c) for c in ci], "n_test": int(trained.size),
            "passed": passes(gain, ci)}


def do_hessian(job: Job, p: Profile, out: Path) -> dict:
    """Top-k Hessian eigenvalues per minibatch of the trained model and, as its control, of its
    initialisation, on the same minibatches and masks."""
    from workbench.checkpoints import load_checkpoint
    from workbench.data import augmented_batches
    from workbench.probes import hessian_spectrum
    from workbench.probes.learning import initial_model

    run = run_path(out, job.kind, job.seed)
    model = load_checkpoint(run)
    batches = augmented_batches(p.data, model.cfg.img_size, p.hessian_batches,
                                p.hessian_batch_size, seed=job.seed)  # the same for MAE and MFF
    spectrum = {name: hessian_spectrum(m, batches, k=p.hessian_k, seed=job.seed,
                                       tol=p.hessian_tol, progress=False).tolist()
                for name, m in (("eigenvalues", model), ("init_eigenvalues", initial_model(run)))}
    return spectrum


def do_measure(job: Job, p: Profile, out: Path) -> dict:
    """Per seed, on the finished MAE and MFF-MAE runs and on their initialisations (the
    controls): frequency response, linear probes (both poolings, the criterion's sizes) and raw
    pixels on the same images, the learning check of each run, fusion and monitor histories and
    the loss curves."""
    import numpy as np

    from workbench.checkpoints import load_models
    from workbench.probes import frequency_response, fusion_history, knn_history
    from workbench.probes.learning import (CRITERION_POOL, criterion_sets, initial_model,
                                           paired_gain, pixel_correct, pool_correct)

    runs = {k: run_path(out, k, job.seed) for k in ("mae", "mff")}
    models = load_models(runs)
    inits = {k: initial_model(r) for k, r in runs.items()}
    size = models["mae"].cfg.img_size
    train_set, test_set = criterion_sets(size, p.probe_train, p.probe_test, job.seed,
                                         p.probe_data)
    imgs = test_set[0][:p.frequency_images]  # the first of the probe's test images
    freq = {k: frequency_response(m, imgs, sublayers=True, per_image=True).to_dict()
            for k, m in models.items()}
    freq_init = {k: frequency_response(m, imgs, sublayers=True, per_image=True).to_dict()
                 for k, m in inits.items()}
    probes = {k: {p_: c.tolist() for p_, c in pool_correct(m, train_set, test_set,
                                                           job.seed).items()}
              for k, m in models.items()}
    probes_init = {k: {p_: c.tolist() for p_, c in pool_correct(m, train_set, test_set,
                                                                job.seed).items()}
                   for k, m in inits.items()}
    learning = {}
    for k in runs:
        trained = np.asarray(probes[k][CRITERION_POOL])
        start = np.asarray(probes_init[k][CRITERION_POOL])
        learning[k] = learning_record(trained, start, *paired_gain(trained, start))
    return {"frequency": freq, "frequency_init": freq_init,
            "probe_correct": {k: v[CRITERION_POOL] for k, v in probes.items()},
            "probes": probes, "probes_init": probes_init,
            "pixels_correct": pixel_correct(train_set, test_set, job.seed).tolist(),
            "learning": learning,
            "fusion": fusion_history(runs["mff"]).to_dict(),
            "knn": {k: knn_history(r).to_dict() for k, r in runs.items()},
            "curves": {k: training_curves(r) for k, r in runs.items()}}


def training_curves(run: Path) -> list[dict]:
    """The run's logged loss, held-out loss and monitor readings per step (from
    ``metrics.jsonl``), so that the report's learning curves rebuild from the job files."""
    from workbench.core.io import read_metrics, run_files

    keep = ("step", "loss", "heldout_loss", "knn_acc", "probe_acc")
    return [{k: r[k] for k in keep if k in r} for r in read_metrics(run_files(run).metrics)]


STAGES = {"pretrain": do_pretrain, "supervised": do_supervised, "sweep": do_sweep,
          "hessian": do_hessian, "measure": do_measure}


# ----------------------------------------------------------------------------- running
def result_path(out: Path, job: Job) -> Path:
    return out / "jobs" / f"{job.name}.json"


def _worker_init(threads: int) -> None:
    import torch

    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


def _timed(job: Job, p: Profile, out: Path) -> tuple[dict, float]:
    start = time.perf_counter()
    result = run_job(job, p, out)
    return result, time.perf_counter() - start


def execute(jobs: list[Job], p: Profile, out: Path, workers: int) -> list[str]:
    """Run the unfinished jobs, ``workers`` at a time, each once its inputs exist; returns the
    names of the jobs that failed (their dependants are skipped)."""
    from workbench.core.io import atomic_write_text

    done = {j.name for j in jobs if result_path(out, j).exists()}
    todo = [j for j in jobs if j.name not in done]
    stages = {s: [j for j in jobs if j.stage == s] for s in STAGES}
    failed: list[str] = []
    t0 = time.perf_counter()
    print(f"[evidence] {len(done)} of {len(jobs)} jobs already done; {len(todo)} to run, "
          f"{workers} at a time", flush=True)
    threads = max(1, (os.cpu_count() or 1) // workers)
    with cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                initializer=_worker_init, initargs=(threads,)) as pool:
        running: dict[cf.Future, Job] = {}
        while todo or running:
            ready = [j for j in todo if all(n in done for n in j.needs())]
            blocked = [j for j in todo if any(n in failed for n in j.needs())]
            for j in blocked:
                todo.remove(j)
                failed.append(j.name)
                print(f"[evidence] skipped {j.name}: an input job failed", flush=True)
            for j in sorted(ready, key=lambda j: -j.cost)[:max(0, workers - len(running))]:
                todo.remove(j)
                running[pool.submit(_timed, j, p, out)] = j
            if not running:
                break
            finished, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for fut in finished:
                job = running.pop(fut)
                try:
                    result, seconds = fut.result()
                except Exception as e:  # noqa: BLE001 - reported; the others go on
                    failed.append(job.name)
                    print(f"[evidence] FAILED {job.name}: {type(e).__name__}: {e}", flush=True)
                    continue
                atomic_write_text(result_path(out, job), json.dumps(
                    {"job": dataclasses.asdict(job), "seconds": round(seconds, 1),
                     "result": result}))
                done.add(job.name)
                stage = stages[job.stage]
                n_done = sum(j.name in done for j in stage)
                print(f"[evidence] {job.stage} {n_done}/{len(stage)}: {job.name} done in "
                      f"{seconds:.0f} s (elapsed {(time.perf_counter() - t0) / 60:.1f} min)",
                      flush=True)
    return failed


# ----------------------------------------------------------------------------- the claims
def load_results(out: Path, jobs: list[Job]) -> dict[str, dict]:
    return {j.name: json.loads(result_path(out, j).read_text()) for j in jobs}


def evidence_claims(p: Profile, results: dict[str, dict]) -> list:
    """Every claim from the job results, through ``workbench.experiments.findings``, each with its own
    verdict; :func:`write_report` decides them as one family (Holm). A claim about runs that do
    not pass the learning criterion (:func:`learning_failures`) is "not testable" here: its
    verdict would be about initialisations."""
    import numpy as np

    from workbench.experiments import findings
    from workbench.probes import FrequencyResponse, FusionHistory, KnnHistory
    from workbench.training.schedule import lr_sum
    from workbench.training.settings import resolve

    def r(job: Job) -> dict:
        return results[job.name]["result"]

    measured = [r(Job("measure", s)) for s in p.seeds]
    freq = {k: [FrequencyResponse.from_dict(m["frequency"][k]) for m in measured]
            for k in ("mae", "mff")}
    eigs = {k: [np.asarray(r(Job("hessian", s, k))["eigenvalues"]) for s in p.seeds]
            for k in ("mae", "mff")}
    sweep = [np.asarray([r(Job("sweep", s, ratio=q))["probe_correct"] for q in p.sweep_ratios])
             for s in p.sweep_seeds]
    fusion = [FusionHistory.from_dict(m["fusion"]) for m in measured]
    supervised = [FusionHistory.from_dict(r(Job("supervised", s))["history"]) for s in p.seeds]
    attainable = [findings.attainable_depth_shift(h.layers, lr_sum(resolve(
        pretrain_config(p, "mff", s, Path("."))))) for h, s in zip(fusion, p.seeds)]
    models = [
        findings.fusion_moves_shallow_vs_supervised(fusion, supervised, attainable),
        findings.fusion_moves_shallow(fusion),
        findings.supervised_fusion_favors_last(supervised),
        findings.shallow_layers_more_high_frequency("MAE", freq["mae"]),
        findings.shallow_layers_more_high_frequency("MFF-MAE", freq["mff"]),
        findings.mff_last_layer_less_high_frequency(freq["mae"], freq["mff"]),
        findings.mff_flatter_hessian(eigs["mae"], eigs["mff"]),
        findings.mff_better_linear_probe([m["probe_correct"]["mae"] for m in measured],
                                         [m["probe_correct"]["mff"] for m in measured],
                                         what="linear probe (mean pool)"),
    ] + ([findings.mff_converges_faster(*([KnnHistory(**m["knn"][k]) for m in measured]
                                          for k in ("mae", "mff")))]
         if all("knn" in m for m in measured) else [])  # measured before the kNN monitor: none
    failed = learning_failures(p, results)
    if failed["models"]:
        why = ("runs that do not pass the learning criterion: " + ", ".join(failed["models"]))
        models = [c if c.claim.startswith("with a supervised objective") else
                  findings.not_testable(c, why) for c in models]
    ratio = findings.high_mask_ratio_best(list(p.sweep_ratios), sweep)
    if failed["sweep"]:
        ratio = findings.not_testable(ratio, "sweep runs that do not pass the learning "
                                             "criterion: " + ", ".join(failed["sweep"]))
    return [*models[:-1], ratio, models[-1]] if len(models) > 8 else [*models, ratio]


def describe(p: Profile, seconds: float | None) -> str:
    from workbench.core.provenance import git_commit

    steps = "the preset's" if p.steps is None else str(p.steps)
    wall = "" if seconds is None else \
        f" Wall time of the jobs, over every invocation: {seconds / 60:.1f} min."
    return (f"Profile `{p.name}` (`analysis/evidence.py`): {len(p.seeds)} pretraining seeds "
            f"{list(p.seeds)} each of MAE and MFF-MAE at the `{p.preset}` preset ({steps} steps) "
            f"on `{p.data}`; probes on the built-in `{p.probe_data}` set "
            f"({p.frequency_images} images for frequency, linear probe {p.probe_train} train / "
            f"{p.probe_test} test, C by 5-fold cross-validation); Hessian top-{p.hessian_k} on "
            f"{p.hessian_batches} augmented training minibatches of {p.hessian_batch_size} per "
            f"seed (tol {p.hessian_tol:g}); supervised fusion per seed with the pretraining run's "
            f"steps, peak lr, warmup and seed (batch {p.supervised_batch}); mask-ratio sweep over "
            f"{list(p.sweep_ratios)} x seeds {list(p.sweep_seeds)}, {p.sweep_steps} steps of "
            f"{p.sweep_batch}. With several seeds each claim is tested over the seeds (a seed's "
            f"images or minibatches are averaged first).{wall} Commit {git_commit(ROOT)}.")


def write_report(out: Path, p: Profile, claims: list, seconds: float | None) -> None:
    """``claims.json``, ``findings.md`` and ``forest.png``. The report's claims are one family:
    their verdicts are Holm-adjusted over it (``workbench.experiments.findings.adjust_family``), and each
    claim keeps ``p``, ``p_two``, ``p_adjusted`` and its own verdict (``verdict_unadjusted``)."""
    from workbench import plots
    from workbench.experiments.findings import adjust_family, findings_markdown
    from workbench.core.io import atomic_write_text

    claims = adjust_family(claims)
    atomic_write_text(out / "claims.json", json.dumps([c.to_dict() for c in claims], indent=2))
    atomic_write_text(out / "findings.md", findings_markdown(claims, p.name, describe(p, seconds)))
    plots.save_figure(plots.forest_figure(claims, f"{p.name} profile: effect ± 95% interval"),
                      out, "forest")


def add_wall_seconds(out: Path, seconds: float) -> None:
    from workbench.core.io import atomic_write_text

    path = out / "wall_seconds.json"
    before = json.loads(path.read_text())["seconds"] if path.exists() else 0.0
    atomic_write_text(path, json.dumps({"seconds": before + seconds}))


def wall_seconds(out: Path) -> float:
    return json.loads((out / "wall_seconds.json").read_text())["seconds"]


# ----------------------------------------------------------------------------- learning, controls
def learning_failures(p: Profile, results: dict[str, dict]) -> dict[str, list[str]]:
    """Runs that do not pass the learning criterion, by what depends on them: "models" (the
    MAE / MFF-MAE pretraining runs, from the measure jobs) and "sweep" (the mask-ratio runs)."""
    failed: dict[str, list[str]] = {"models": [], "sweep": []}
    for s in p.seeds:
        for kind, rec in results[Job("measure", s).name]["result"]["learning"].items():
            if not rec["passed"]:
                failed["models"].append(f"{kind} seed {s} ({100 * rec['gain']:+.1f} points)")
    for s in p.sweep_seeds:
        for q in p.sweep_ratios:
            rec = results[Job("sweep", s, ratio=q).name]["result"]["learning"]
            if not rec["passed"]:
                failed["sweep"].append(f"ratio {q:g} seed {s} ({100 * rec['gain']:+.1f} points)")
    return failed


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def learning_table(p: Profile, results: dict[str, dict]) -> list[str]:
    """Markdown rows: every run's learning check (trained vs its initialisation, paired on the
    same held-out images) and the raw-pixel baseline."""
    from workbench.probes.learning import MIN_GAIN, MIN_GAIN_LOW

    lines = ["## The learning criterion, run by run", "",
             f"A linear probe on mean-pooled frozen features of the built-in shapes ({p.probe_train} "
             f"train / {p.probe_test} held-out images, 8 classes, chance 12.5 %), each run against "
             f"its own initialisation (the same config and seed at step 0), paired image by image. "
             f"A run passes with a gain >= {100 * MIN_GAIN:.0f} points and the 95 % interval above "
             f"+{100 * MIN_GAIN_LOW:.0f}. Claims about runs that fail are reported as not testable.",
             "", "| run | trained % | init % | raw pixels % | gain, points [95 % CI] | passes |",
             "|---|---|---|---|---|---|"]

    def row(name: str, rec: dict, pixels: str) -> str:
        return (f"| {name} | {_pct(rec['trained'])} | {_pct(rec['init'])} | {pixels} | "
                f"{100 * rec['gain']:+.1f} [{100 * rec['ci'][0]:+.1f}, {100 * rec['ci'][1]:+.1f}] | "
                f"{'yes' if rec['passed'] else '**no**'} |")

    for s in p.seeds:
        m = results[Job("measure", s).name]["result"]
        pixels = _pct(sum(m["pixels_correct"]) / len(m["pixels_correct"]))
        lines += [row(f"{LABEL[k]} seed {s}", rec, pixels) for k, rec in m["learning"].items()]
    for s in p.sweep_seeds:
        for q in p.sweep_ratios:
            rec = results[Job("sweep", s, ratio=q).name]["result"]["learning"]
            lines.append(row(f"sweep MAE, mask ratio {q:g}, seed {s}", rec, "–"))
    return lines


LABEL = {"mae": "MAE", "mff": "MFF-MAE"}


def controls_table(p: Profile, results: dict[str, dict]) -> list[str]:
    """Markdown rows: each per-model measurement on the trained model and on the same seed's
    initialisation (the control), so that a claim's pattern can be told from what an untrained
    ViT already shows."""
    import numpy as np

    from workbench.experiments.findings import depth_slope
    from workbench.probes import FrequencyResponse

    def slope(r: FrequencyResponse) -> float:  # of the mean curve, over the blocks
        rows = r.block_rows
        return float(depth_slope(np.asarray(r.high_frequency, dtype=float)[rows],
                                 np.asarray(r.depth, dtype=float)[rows]))

    lines = ["## Controls: trained against initialisation, seed by seed", "",
             "| seed | model | high-frequency slope over depth, trained / init | last block "
             "high frequency, trained / init | median top Hessian eigenvalue, trained / init |",
             "|---|---|---|---|---|"]
    for s in p.seeds:
        m = results[Job("measure", s).name]["result"]
        for k in ("mae", "mff"):
            tr = FrequencyResponse.from_dict(m["frequency"][k])
            ini = FrequencyResponse.from_dict(m["frequency_init"][k])
            h = results[Job("hessian", s, k).name]["result"]
            med = [float(np.median(np.abs(np.asarray(h[key]))[:, 0]))
                   for key in ("eigenvalues", "init_eigenvalues")]
            lines.append(f"| {s} | {LABEL[k]} | {slope(tr):+.3f} / {slope(ini):+.3f} | "
                         f"{tr.high_frequency[tr.last_block_row]:+.3f} / "
                         f"{ini.high_frequency[ini.last_block_row]:+.3f} | "
                         f"{med[0]:.3g} / {med[1]:.3g} |")
    return lines


def evidence_figures(out: Path, p: Profile, results: dict[str, dict]) -> list[str]:
    """Every seed's learning curves, fusion trajectories against the supervised contrast and
    frequency curves against the initialisation, from the job results; returns the files."""
    from workbench import plots
    from workbench.probes import FrequencyResponse, FusionHistory

    measured = [results[Job("measure", s).name]["result"] for s in p.seeds]
    figures = {
        "learning_curves": plots.learning_curves_figure(
            {k: [m["curves"][k] for m in measured] for k in ("mae", "mff")}, p.seeds),
        "fusion_trajectories": plots.fusion_trajectories_figure(
            [FusionHistory.from_dict(m["fusion"]) for m in measured],
            [FusionHistory.from_dict(results[Job("supervised", s).name]["result"]["history"])
             for s in p.seeds], p.seeds),
        "frequency_seeds": plots.frequency_seeds_figure(
            {k: [FrequencyResponse.from_dict(m["frequency"][k]) for m in measured]
             for k in ("mae", "mff")},
            {k: [FrequencyResponse.from_dict(m["frequency_init"][k]) for m in measured]
             for k in ("mae", "mff")}, p.seeds)}
    for name, fig in figures.items():
        plots.save_figure(fig, out, name)
    return [f"{name}.png" for name in figures]


def report_appendix(out: Path, p: Profile, results: dict[str, dict]) -> str:
    """The report's second half: the learning criterion per run, the controls, the figures."""
    files = evidence_figures(out, p, results)
    lines = ["", *learning_table(p, results), "", *controls_table(p, results), "",
             "## Figures", "", *[f"![{f}]({f})" for f in ["forest.png", *files]], ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", choices=sorted(PROFILES), default="cpu")
    ap.add_argument("--out", type=Path, default=None, help="default: evidence/<profile>")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                    help="jobs run at once, the cores split between them (default 2)")
    ap.add_argument("--report-only", action="store_true",
                    help="run nothing: rebuild claims.json, findings.md and every figure from "
                         "the job results already in OUT/jobs (e.g. the committed ones)")
    args = ap.parse_args(argv)
    if args.jobs < 1:
        ap.error(f"--jobs must be at least 1, got {args.jobs}")
    p = PROFILES[args.profile]
    out = args.out or ROOT / "evidence" / p.name
    from workbench.core.io import FileLocked, file_lock, remove_stale_temps

    jobs = plan(p)
    if args.report_only:
        return rebuild_report(out, p, jobs)
    start = time.perf_counter()
    try:
        with file_lock(out / ".lock", 0, holder="another evidence run"):
            remove_stale_temps(out)
            try:
                failed = execute(jobs, p, out, args.jobs)
            finally:  # wall time summed over every invocation that ran jobs, kills included
                add_wall_seconds(out, time.perf_counter() - start)
            if failed:
                print(f"[evidence] FAILED jobs: {failed}; run again to retry them", file=sys.stderr)
                return 1
            results = load_results(out, jobs)
            write_report(out, p, evidence_claims(p, results), wall_seconds(out))
            append_appendix(out, p, results)
    except FileLocked as e:
        print(f"[evidence] error: {e}", file=sys.stderr)
        return 1
    print(f"[evidence] {len(jobs)} jobs in {(time.perf_counter() - start) / 60:.1f} min this time; "
          f"findings: {out / 'findings.md'}", flush=True)
    return 0


def append_appendix(out: Path, p: Profile, results: dict[str, dict]) -> None:
    from workbench.core.io import atomic_write_text

    report = (out / "findings.md").read_text()
    atomic_write_text(out / "findings.md", report + report_appendix(out, p, results))


def rebuild_report(out: Path, p: Profile, jobs: list[Job]) -> int:
    """``--report-only``: the report from ``OUT/jobs/*.json`` alone (no training, no probe)."""
    missing = [j.name for j in jobs if not result_path(out, j).exists()]
    if missing:
        print(f"[evidence] error: {out / 'jobs'} lacks {len(missing)} of {len(jobs)} job results "
              f"(e.g. {missing[0]}.json): --report-only rebuilds from finished jobs only; run "
              f"without it to compute them", file=sys.stderr)
        return 1
    results = load_results(out, jobs)
    seconds = wall_seconds(out) if (out / "wall_seconds.json").exists() else None
    write_report(out, p, evidence_claims(p, results), seconds)
    append_appendix(out, p, results)
    print(f"[evidence] report rebuilt from {len(jobs)} job results: {out / 'findings.md'}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
