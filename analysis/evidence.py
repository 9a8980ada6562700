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
``workbench.findings`` -- the same claim functions the notebooks call on one seed.
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

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Profile:
    """Sizes of the plan. ``seeds`` pretraining seeds per model; every per-seed measurement uses
    the pair (MAE seed s, MFF seed s)."""

    name: str
    preset: str = "tiny"
    device: str = "cpu"
    data: str = "builtin"  # pretraining images
    probe_data: str = "shapes"  # labelled set of the probes and the supervised comparison
    seeds: tuple[int, ...] = (0, 1, 2)
    steps: int | None = None  # pretraining steps (None: the preset's)
    supervised_batch: int = 32  # the lr, steps and seed are the pretraining run's
    frequency_images: int = 256
    probe_train: int = 1024
    probe_test: int = 512
    hessian_batches: int = 11  # per seed: 33 minibatches over 3 seeds
    hessian_batch_size: int = 16
    hessian_k: int = 5
    hessian_tol: float = 1e-2
    sweep_ratios: tuple[float, ...] = (0.1, 0.25, 0.4, 0.6, 0.75, 0.9)
    sweep_seeds: tuple[int, ...] = (0, 1, 2)  # 3: a t interval over 2 seeds has 1 df
    sweep_steps: int = 50
    sweep_batch: int = 32
    sweep_probe: int = 256


PROFILES = {
    "cpu": Profile("cpu"),
    "gpu": Profile("gpu", preset="gpu-small", device="cuda", seeds=(0, 1, 2, 3, 4),
                   supervised_batch=256, frequency_images=1024, probe_train=4096,
                   probe_test=2048, hessian_batches=8, hessian_batch_size=64, hessian_tol=1e-3,
                   sweep_seeds=(0, 1, 2), sweep_steps=1000, sweep_batch=256, sweep_probe=1024),
    # for tests: every job on the smallest sizes that still give every claim its inputs
    "smoke": Profile("smoke", seeds=(0, 1), steps=2, supervised_batch=8, frequency_images=8,
                     probe_train=96, probe_test=16, hessian_batches=1, hessian_batch_size=4,
                     hessian_k=2, hessian_tol=0.5, sweep_ratios=(0.25, 0.75),
                     sweep_seeds=(0,), sweep_steps=2, sweep_batch=8, sweep_probe=48),
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
    jobs += [Job("sweep", s, ratio=r, cost=1 + (1 - r)) for s in p.sweep_seeds
             for r in p.sweep_ratios]
    jobs += [Job("hessian", s, k, cost=3) for s in p.seeds for k in ("mae", "mff")]
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
    from workbench.supervised import SupervisedFusionConfig, train_supervised_fusion

    cfg = SupervisedFusionConfig.matching(pretrain_config(p, "mff", job.seed, out),
                                          batch_size=p.supervised_batch, data=p.probe_data,
                                          progress=False)
    return {"config": dataclasses.asdict(cfg), **train_supervised_fusion(cfg).to_dict()}


def do_sweep(job: Job, p: Profile, out: Path) -> dict:
    from workbench.checkpoints import load_checkpoint
    from workbench.sweeps import measure_at_ratio, sweep_sets, train_at_ratio

    ckpt = train_at_ratio(job.ratio, p.sweep_steps, p.sweep_batch, "mae", p.preset, job.seed,
                          out / "runs" / "sweep", p.data)
    model = load_checkpoint(ckpt)
    sets = sweep_sets(model.cfg.img_size, p.sweep_probe, job.seed, p.data, p.probe_data)
    return measure_at_ratio(model, job.ratio, sets, job.seed)


def do_hessian(job: Job, p: Profile, out: Path) -> dict:
    from workbench.checkpoints import load_checkpoint
    from workbench.data import augmented_batches
    from workbench.probes import hessian_spectrum

    model = load_checkpoint(run_path(out, job.kind, job.seed))
    batches = augmented_batches(p.data, model.cfg.img_size, p.hessian_batches,
                                p.hessian_batch_size, seed=job.seed)  # the same for MAE and MFF
    eigs = hessian_spectrum(model, batches, k=p.hessian_k, seed=job.seed, tol=p.hessian_tol,
                            progress=False)
    return {"eigenvalues": eigs.tolist()}


def do_measure(job: Job, p: Profile, out: Path) -> dict:
    from workbench.checkpoints import load_models
    from workbench.data import fixed_batch
    from workbench.probes import frequency_response, fusion_history, knn_history, probe_correct

    models = load_models({k: run_path(out, k, job.seed) for k in ("mae", "mff")})
    size = models["mae"].cfg.img_size
    train_set = fixed_batch(p.probe_data, size, p.probe_train, "train", job.seed)
    # one held-out draw: fixed_batch takes the first n of a seeded permutation, so the frequency
    # images are the first ones of the probe's test images
    heldout = fixed_batch(p.probe_data, size, max(p.probe_test, p.frequency_images), "heldout",
                          job.seed)
    imgs = heldout[0][:p.frequency_images]
    test_set = (heldout[0][:p.probe_test], heldout[1][:p.probe_test])
    return {"frequency": {k: frequency_response(m, imgs, sublayers=True, per_image=True).to_dict()
                          for k, m in models.items()},
            "probe_correct": {k: probe_correct(m, train_set, test_set, seed=job.seed).tolist()
                              for k, m in models.items()},
            "fusion": fusion_history(run_path(out, "mff", job.seed)).to_dict(),
            "knn": {k: knn_history(run_path(out, k, job.seed)).to_dict() for k in models}}


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
    from workbench.io import atomic_write_text

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
    """Every claim from the job results, through ``workbench.findings``."""
    import numpy as np

    from workbench import findings
    from workbench.probes import FrequencyResponse, FusionHistory, KnnHistory

    def r(job: Job) -> dict:
        return results[job.name]["result"]

    measured = [r(Job("measure", s)) for s in p.seeds]
    freq = {k: [FrequencyResponse.from_dict(m["frequency"][k]) for m in measured]
            for k in ("mae", "mff")}
    eigs = {k: [np.asarray(r(Job("hessian", s, k))["eigenvalues"]) for s in p.seeds]
            for k in ("mae", "mff")}
    sweep = [np.asarray([r(Job("sweep", s, ratio=q))["probe_correct"] for q in p.sweep_ratios])
             for s in p.sweep_seeds]
    supervised = [FusionHistory.from_dict(r(Job("supervised", s))["history"]) for s in p.seeds]
    return [
        findings.fusion_moves_shallow([FusionHistory.from_dict(m["fusion"]) for m in measured]),
        findings.supervised_fusion_favors_last(supervised),
        findings.shallow_layers_more_high_frequency("MAE", freq["mae"]),
        findings.shallow_layers_more_high_frequency("MFF-MAE", freq["mff"]),
        findings.mff_last_layer_less_high_frequency(freq["mae"], freq["mff"]),
        findings.mff_flatter_hessian(eigs["mae"], eigs["mff"]),
        findings.mff_better_linear_probe([m["probe_correct"]["mae"] for m in measured],
                                         [m["probe_correct"]["mff"] for m in measured]),
        findings.high_mask_ratio_best(list(p.sweep_ratios), sweep),
    ] + ([findings.mff_converges_faster(*([KnnHistory(**m["knn"][k]) for m in measured]
                                          for k in ("mae", "mff")))]
         if all("knn" in m for m in measured) else [])  # measured before the kNN monitor: none


def describe(p: Profile, seconds: float | None) -> str:
    from workbench.provenance import git_commit

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
    from workbench import plots
    from workbench.findings import findings_markdown
    from workbench.io import atomic_write_text

    atomic_write_text(out / "claims.json", json.dumps([c.to_dict() for c in claims], indent=2))
    atomic_write_text(out / "findings.md", findings_markdown(claims, p.name, describe(p, seconds)))
    plots.save_figure(plots.forest_figure(claims, f"{p.name} profile: effect ± 95% interval"),
                      out, "forest")


def add_wall_seconds(out: Path, seconds: float) -> None:
    from workbench.io import atomic_write_text

    path = out / "wall_seconds.json"
    before = json.loads(path.read_text())["seconds"] if path.exists() else 0.0
    atomic_write_text(path, json.dumps({"seconds": before + seconds}))


def wall_seconds(out: Path) -> float:
    return json.loads((out / "wall_seconds.json").read_text())["seconds"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", choices=sorted(PROFILES), default="cpu")
    ap.add_argument("--out", type=Path, default=None, help="default: evidence/<profile>")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                    help="jobs run at once, the cores split between them (default 2)")
    args = ap.parse_args(argv)
    if args.jobs < 1:
        ap.error(f"--jobs must be at least 1, got {args.jobs}")
    p = PROFILES[args.profile]
    out = args.out or ROOT / "evidence" / p.name
    from workbench.io import FileLocked, file_lock, remove_stale_temps

    jobs = plan(p)
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
    except FileLocked as e:
        print(f"[evidence] error: {e}", file=sys.stderr)
        return 1
    print(f"[evidence] {len(jobs)} jobs in {(time.perf_counter() - start) / 60:.1f} min this time; "
          f"findings: {out / 'findings.md'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
