"""The evidence plan's jobs (``evidence_plan``), each a function of (job, profile, out) run in a
worker process, and :func:`execute`, which runs the unfinished ones through
``workbench.experiments.scheduler`` (a failed job's dependants are skipped) and writes each
result to ``OUT/jobs/<job>.json`` as it ends."""
from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

from workbench.experiments import scheduler
from workbench.experiments.evidence_plan import Job, Profile, pretrain_config, result_path, run_path


def run_job(job: Job, p: Profile, out: Path) -> dict:
    """Do one job (in a worker process) and return its JSON-ready result."""
    return STAGES[job.stage](job, p, out)


def do_pretrain(job: Job, p: Profile, out: Path) -> dict:
    from workbench import train

    res = train(pretrain_config(p, job.kind, job.seed, out))
    return {"checkpoint": res.checkpoint, "loss": res.loss, "heldout_loss": res.heldout_loss}


def do_supervised(job: Job, p: Profile, out: Path) -> dict:
    from workbench.experiments.supervised import SupervisedFusionConfig, train_supervised_fusion

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


def labelled_pair(out: Path, seed: int) -> dict[str, Path]:
    """The seed's finished MAE and MFF-MAE pretraining runs under their figure labels."""
    return {"MAE": run_path(out, "mae", seed), "MFF-MAE": run_path(out, "mff", seed)}


def do_finetune(job: Job, p: Profile, out: Path) -> dict:
    """The fine-tuning series (``experiments.finetune.finetune_series``: the last k blocks on
    every label, every block on each label share) of the seed's finished MAE and MFF-MAE runs,
    fine-tuned with the seed, every run scored on the probe's held-out images."""
    from workbench.experiments.finetune import finetune_series

    runs = labelled_pair(out, job.seed)
    series = finetune_series(runs, p.finetune_blocks, p.finetune_fractions, data=p.probe_data,
                             eval_images=p.probe_test, seed=job.seed,
                             runs_dir=out / "runs" / "finetune", steps=p.finetune_steps,
                             batch_size=p.finetune_batch, device=p.device,
                             **dict(p.finetune_settings))
    return series.to_dict()


def do_dynamics(job: Job, p: Profile, out: Path) -> dict:
    """The seed's MAE and MFF-MAE measured at every weight snapshot of their pretraining by the
    gallery's probes (``experiments.dynamics``): {probe: {model: OverTraining as a dict}}."""
    from workbench.experiments.dynamics import GALLERY_PROBES, dynamics_series

    probes = GALLERY_PROBES if p.dynamics_images is None else {
        probe: {k: p.dynamics_images if k in ("images", "train", "test") else v
                for k, v in settings.items()} for probe, settings in GALLERY_PROBES.items()}
    runs = labelled_pair(out, job.seed)
    return {probe: {model: seeds[0].to_dict() for model, seeds in by_model.items()}
            for probe, by_model in dynamics_series(runs, probes).items()}


def training_curves(run: Path) -> list[dict]:
    """The run's logged loss, held-out loss and monitor readings per step (from
    ``metrics.jsonl``), so that the report's learning curves rebuild from the job files."""
    from workbench.core.io import read_metrics, run_files

    keep = ("step", "loss", "heldout_loss", "knn_acc", "probe_acc")
    return [{k: r[k] for k in keep if k in r} for r in read_metrics(run_files(run).metrics)]


STAGES = {"pretrain": do_pretrain, "supervised": do_supervised, "sweep": do_sweep,
          "hessian": do_hessian, "measure": do_measure, "finetune": do_finetune,
          "dynamics": do_dynamics}


def _worker_init(threads: int) -> None:
    import torch

    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


def _timed(job: Job, p: Profile, out: Path) -> tuple[dict, float]:
    start = time.perf_counter()
    result = run_job(job, p, out)
    return result, time.perf_counter() - start


def execute(jobs: list[Job], p: Profile, out: Path, workers: int) -> list[str]:
    """Run the unfinished jobs, ``workers`` at a time in worker processes, the costliest ready
    one first, each once its inputs exist; returns the names of the jobs that failed and of
    their dependants, which are skipped (``scheduler.FailureRule.SKIP_DEPENDENTS``)."""
    from workbench.core.io import atomic_write_text

    done = {j.name for j in jobs if result_path(out, j).exists()}
    todo = {j.name: j for j in jobs if j.name not in done}
    stages = {s: [j for j in jobs if j.stage == s] for s in STAGES}
    failed: list[str] = []
    t0 = time.perf_counter()
    print(f"[evidence] {len(done)} of {len(jobs)} jobs already done; {len(todo)} to run, "
          f"{workers} at a time", flush=True)

    def finished(name: str, timed: tuple[dict, float]) -> None:
        (result, seconds), job = timed, todo[name]
        atomic_write_text(result_path(out, job), json.dumps(
            {"job": dataclasses.asdict(job), "seconds": round(seconds, 1), "result": result}))
        done.add(name)
        n_done = sum(j.name in done for j in stages[job.stage])
        print(f"[evidence] {job.stage} {n_done}/{len(stages[job.stage])}: {name} done in "
              f"{seconds:.0f} s (elapsed {(time.perf_counter() - t0) / 60:.1f} min)", flush=True)

    def crashed(name: str, e: BaseException) -> None:  # reported; the others go on
        failed.append(name)
        print(f"[evidence] FAILED {name}: {type(e).__name__}: {e}", flush=True)

    def skipped(name: str) -> None:
        failed.append(name)
        print(f"[evidence] skipped {name}: an input job failed", flush=True)

    graph = {n: scheduler.Node(tuple(j.needs()), (_timed, j, p, out), j.cost)
             for n, j in todo.items()}
    scheduler.run_graph(graph, workers=workers, failure=scheduler.FailureRule.SKIP_DEPENDENTS,
                        finished=done, initializer=_worker_init,
                        initargs=(max(1, (os.cpu_count() or 1) // workers),),
                        on_done=finished, on_failed=crashed, on_skipped=skipped)
    return failed
