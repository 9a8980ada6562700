"""Regenerate every figure into a gallery: train (or take) checkpoints, run the notebooks with
papermill, and write ``manifest.json``, ``index.html`` and ``findings.md``.

    python analysis/make_figures.py                       # tiny MAE, MFF-MAE, pixel-target MAE
    python analysis/make_figures.py --mae A.pth --mff B.pth --out figures-vitb   # external models

Each notebook writes its figures and a ``<name>.json`` of the numbers behind them into its own
folder, and may write ``claims.json`` (a list of ``workbench.experiments.findings.Claim`` dicts) that
``findings.md`` and the forest plot ``forest.png`` collect (``workbench.experiments.findings``). A failing
notebook is reported and the others still run; the exit code is 1 if anything failed.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import yaml

from workbench.experiments import scheduler
from workbench.experiments.captions import (NOTEBOOKS, PARAMS_FILE, caption_counts,  # noqa: F401
                                            load_captions, load_parameter_sets,
                                            notebook_parameters)
from workbench.experiments.gallery import write_findings, write_index  # noqa: F401
from workbench.experiments.tiny_runs import (GALLERY_RUNS, RUN_FORMAT,  # noqa: F401
                                             TINY_RUNS, TRAIN_COST, TinyRun, models_note,
                                             plan_run, request_record, run_steps,
                                             shipped_checkpoints, train_request, train_run)

ROOT = Path(__file__).resolve().parents[2]
FIGURE_SUFFIXES = (".png", ".svg", ".html")
VERSIONED = ("torch", "timm", "numpy", "matplotlib", "plotly", "papermill", "pyhessian",
             "scikit-learn", "mim-workbench")
DEFAULT_NEEDS = GALLERY_RUNS  # the runs a notebook waits for unless its entry says `needs:`
# runs whose folder only the notebooks that need them get, as this parameter
RUN_PARAMETERS = {"mae_dynamics": "MAE_DYNAMICS_RUN", "mff_dynamics": "MFF_DYNAMICS_RUN"}


# ----------------------------------------------------------------------------- provenance
def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def git_commit() -> str | None:
    from workbench.core.provenance import git_commit as commit_of

    return commit_of(ROOT)


def versions() -> dict[str, str]:
    """Installed versions of the packages behind the figures (those installed)."""
    from workbench.core.provenance import package_versions

    return {k: v for k, v in package_versions(VERSIONED).items() if v is not None}


# ----------------------------------------------------------------------------- the batch's tasks
@dataclasses.dataclass
class Task:
    """One unit of the batch: a tiny training or a notebook, run in a worker process."""

    name: str
    kind: str  # "train" | "notebook"
    cost: float  # rough relative run time (figures.yaml's `cost`, TRAIN_COST)
    needs: tuple[str, ...]  # tiny runs (keys of TINY_RUNS) that must be trained first
    call: tuple  # (function, *args): what the worker runs
    index: int = 0  # notebooks: position in figures.yaml

    def run(self):
        fn, *args = self.call
        return fn(*args)


def threads_per_job(jobs: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(1, jobs))


def _limit_threads(threads: int) -> None:
    """Pool initializer: kernels started from this worker use ``threads`` CPU threads."""
    os.environ["OMP_NUM_THREADS"] = str(threads)


def priorities(tasks: list[Task]) -> dict[str, float]:
    """A task's cost plus the cost of every task that waits for it: trainings that unblock most
    notebooks start first, then the costliest notebooks (critical-path list scheduling)."""
    waiting = {t.name: sum(u.cost for u in tasks if t.kind == "train" and t.name in u.needs)
               for t in tasks}
    return {t.name: t.cost + waiting[t.name] for t in tasks}


def run_tasks(tasks: list[Task], jobs: int, done) -> dict[str, tuple[float, float]]:
    """Run ``tasks``, at most ``jobs`` at a time in worker processes (the cores split between
    them; one job: here), each as soon as the trainings it needs are done, by :func:`priorities`;
    ``done(task, result)`` for each as it ends. Returns {name: (start, end)} seconds from the
    start. A failed training starts nothing more and is raised once the running tasks end
    (``scheduler.FailureRule.STOP``); a task waiting for a run no task trains is a
    ``scheduler.ScheduleError`` before anything runs."""
    rank = priorities(tasks)
    by_name = {t.name: t for t in tasks}
    graph = {t.name: scheduler.Node(t.needs, t.call, rank[t.name]) for t in tasks}
    outcome = scheduler.run_graph(graph, workers=jobs, failure=scheduler.FailureRule.STOP,
                                  inline=jobs == 1, initializer=_limit_threads,
                                  initargs=(threads_per_job(jobs),),
                                  on_done=lambda name, result: done(by_name[name], result))
    if outcome.failed:
        raise next(iter(outcome.failed.values()))
    return {n: (round(a, 1), round(b, 1)) for n, (a, b) in outcome.times.items()}


# ----------------------------------------------------------------------------- notebooks
@contextlib.contextmanager
def kernel_stderr_to(path: Path):
    """The kernels papermill starts inherit this process's stderr (file descriptor 2); for the
    block it goes to ``path``, so their start-up warnings ("Kernel is running over TCP without
    encryption") land in the notebook's folder instead of the batch's output."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(path, "ab") as log:
            os.dup2(log.fileno(), 2)
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def run_notebook(entry: dict, out: Path, common: dict) -> dict:
    """Execute one notebook into ``out/<name>/``; the record carries its parameters, status,
    seconds and files (the batch adds checkpoints, versions and git commit, so that each figure
    stands alone)."""
    import papermill as pm

    name = entry["name"]
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    params = {**common, **entry.get("parameters", {}), "OUTPUT_DIR": str(folder)}
    record = {"name": name, "notebook": entry["notebook"], "parameters": params,
              "executed": str((folder / entry["notebook"]).relative_to(out))}
    start = time.perf_counter()
    try:
        with kernel_stderr_to(folder / "kernel-stderr.log"):
            pm.execute_notebook(str(NOTEBOOKS / entry["notebook"]),
                                str(folder / entry["notebook"]), parameters=params,
                                cwd=str(NOTEBOOKS), progress_bar=False, kernel_name="python3")
        record["status"] = "ok"
    except Exception as e:  # noqa: BLE001 - recorded, the batch goes on
        record["status"] = "failed"
        record["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"
    record["seconds"] = round(time.perf_counter() - start, 2)
    record["files"] = sorted(str(p.relative_to(out)) for p in folder.rglob("*")
                             if p.suffix in FIGURE_SUFFIXES + (".json",))
    return record


def notebook_common(ckpts: dict[str, Path], sets: list[str]) -> dict:
    """The parameters every notebook gets: the checkpoints, the run folders, ``--set`` values."""
    common = {"MAE_CHECKPOINT": str(Path(ckpts["mae"]).resolve()),
              "MFF_CHECKPOINT": str(Path(ckpts["mff"]).resolve()),
              "MFF_RUN_DIR": str(Path(ckpts["mff"]).resolve().parent),
              "MAE_RUN_DIR": str(Path(ckpts["mae"]).resolve().parent),
              # None: no pixel-target model (external --mae/--mff without --pixels)
              "PIXEL_CHECKPOINT": str(Path(ckpts["pixels"]).resolve()) if "pixels" in ckpts else None,
              # the training-dynamics runs' folders (for the notebooks that need those runs)
              **{key: str(Path(ckpts[run]).resolve().parent)
                 for run, key in RUN_PARAMETERS.items() if run in ckpts}}
    for item in sets:
        key, _, value = item.partition("=")
        common[key] = yaml.safe_load(value)
    return common


def entry_parameters(entry: dict, common: dict) -> dict:
    """The common parameters a gallery entry's notebook gets: all but the run folders of
    :data:`RUN_PARAMETERS` that its ``needs`` do not name."""
    unneeded = {key for run, key in RUN_PARAMETERS.items()
                if run not in entry.get("needs", DEFAULT_NEEDS)}
    return {k: v for k, v in common.items() if k not in unneeded}


def batch_tasks(plans: dict, sets: list[dict], args: argparse.Namespace,
                common: dict) -> list[Task]:
    """The trainings still to do that some notebook of ``sets`` needs, and every notebook; a
    notebook waits for the runs its entry ``needs`` (default: every tiny run) among those
    trained here (a reused run is there already). With ``--only hessian`` the pixel-target run
    is not trained."""
    to_train = [n for n, (_, cmd) in plans.items() if cmd is not None]
    needs = {e["name"]: tuple(r for r in e.get("needs", DEFAULT_NEEDS) if r in to_train)
             for e in sets}
    wanted = {r for n in needs.values() for r in n}
    tasks = [Task(n, "train", TRAIN_COST[n], (), (train_run, n, plans[n][1], args.steps,
                                                  args.train_arg))
             for n in to_train if n in wanted]
    return tasks + [Task(e["name"], "notebook", float(e.get("cost", 1)), needs[e["name"]],
                         (run_notebook, e, args.out, entry_parameters(e, common)), i)
                    for i, e in enumerate(sets)]


def stage_times(times: dict[str, tuple[float, float]], trainings: dict[str, float],
                records: list[dict], wall: float) -> dict:
    """``manifest.json``'s ``stages``: each training's and notebook's seconds and its start / end
    in the batch (seconds from the start; trainings and notebooks overlap), and the wall time."""
    return {"trainings": {n: {"seconds": s, "start": times[n][0], "end": times[n][1]}
                          for n, s in trainings.items()},
            "notebooks": {r["name"]: {"seconds": r["seconds"], "start": times[r["name"]][0],
                                      "end": times[r["name"]][1]} for r in records},
            "trainings_and_notebooks_seconds": round(wall, 1)}


# ----------------------------------------------------------------------------- command line
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "figures")
    p.add_argument("--runs", type=Path, default=ROOT / "runs")
    p.add_argument("--mae", type=Path, help="MAE checkpoint (any supported layout) instead of training")
    p.add_argument("--mff", type=Path, help="MFF-MAE checkpoint instead of training")
    p.add_argument("--pixels", type=Path,
                   help="pixel-target MAE checkpoint (norm_pix_loss off) for the reconstruction "
                        "gallery; trained as runs/mae-pixels-tiny unless --mae or --mff is given")
    p.add_argument("--train", action="store_true",
                   help="train the tiny MAE and MFF-MAE afresh with the shipped weights' own "
                        "command (make figures TRAIN=1) instead of using weights/")
    p.add_argument("--steps", type=int,
                   help="training steps for the tiny runs (default: the learning regime's)")
    p.add_argument("--train-arg", action="append", default=[],
                   help="extra argument for `python -m workbench train` (repeatable)")
    p.add_argument("--params", type=Path, default=PARAMS_FILE)
    p.add_argument("--only", action="append", help="run only these figure names")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="notebook parameter for every notebook (YAML value)")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                   help="trainings / notebooks run at once, the cores split between them "
                        "(default: 2, or 1 on a 1-core machine)")
    p.add_argument("--lock-timeout", type=float, default=None, metavar="SECONDS",
                   help="how long to wait for another batch writing the same --out "
                        "(default: as long as it takes; 0: fail at once)")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error(f"--jobs must be at least 1, got {args.jobs}")

    from workbench.core.io import FileLocked, file_lock, remove_stale_temps

    # One batch at a time per gallery folder: two batches into the same figures/ would mix their
    # files. The OS drops the lock when a batch exits, even when it is killed.
    try:
        with file_lock(args.out / ".lock", args.lock_timeout, holder="another make_figures run"):
            remove_stale_temps(args.out)  # left by a batch killed while writing the gallery
            return run_batch(args, p)
    except FileLocked as e:
        print(f"[figures] error: {e}", file=sys.stderr)
        return 1


def check_arguments(args: argparse.Namespace, p: argparse.ArgumentParser) -> list[dict]:
    """The given checkpoints are readable and the ``--only`` names known (else ``p.error``, before
    any work); returns the parameter sets to run."""
    from workbench.checkpoints import CheckpointError, read_checkpoint

    for flag in TINY_RUNS:
        given = getattr(args, flag, None)  # the dynamics runs have no flag: always trained
        if given is not None and not given.exists():
            p.error(f"--{flag} checkpoint not found: {given}")
        if given is not None:  # truncated, half-written, not a checkpoint: say so before any work
            try:
                read_checkpoint(given)
            except (CheckpointError, OSError) as e:
                p.error(f"--{flag} checkpoint cannot be used: {e}")
    sets = load_parameter_sets(args.params)
    if args.only:
        unknown = set(args.only) - {s["name"] for s in sets}
        if unknown:
            p.error(f"unknown figure name(s) {sorted(unknown)}; known: {[s['name'] for s in sets]}")
        sets = [s for s in sets if s["name"] in args.only]
    return sets


def choose_checkpoints(args: argparse.Namespace) -> tuple[dict, dict, list[str]]:
    """(given, shipped, missing): the checkpoints given on the command line, those taken from
    ``weights/`` and the tiny runs still to plan (trained here or reused from ``--runs``)."""
    given = {k: getattr(args, k) for k in TINY_RUNS if getattr(args, k, None) is not None}
    missing = [k for k in TINY_RUNS if k not in given]
    # the shipped weights stand for the default request only: --train, --steps or --train-arg
    # ask for other runs, which are trained
    default = not (args.train or args.steps is not None or args.train_arg)
    shipped = shipped_checkpoints([k for k in missing if k != "pixels"]) if default else {}
    missing = [k for k in missing if k not in shipped]
    if "pixels" in missing and set(given) & {"mae", "mff"}:
        # a tiny pixel-target model beside external models would not be their like: the
        # reconstruction notebook then skips its pixel-target figure unless --pixels is given
        missing.remove("pixels")
    if set(given) & {"mae", "mff"}:  # nor would tiny dynamics runs: their figure set is skipped
        missing = [k for k in missing if k not in RUN_PARAMETERS]
    return given, shipped, missing


def runnable_sets(sets: list[dict], ckpts: dict) -> list[dict]:
    """The figure sets whose named ``needs`` are all at hand (the dynamics runs are not trained
    beside external --mae / --mff); a line for each one left out."""
    kept = []
    for entry in sets:
        absent = [r for r in entry.get("needs", ()) if r not in ckpts]
        if absent:
            print(f"[figures] {entry['name']}: skipped (it needs the tiny runs {absent}, trained "
                  f"only when the gallery's MAE and MFF-MAE are the tiny ones)", flush=True)
        else:
            kept.append(entry)
    return kept


def run_batch(args: argparse.Namespace, p: argparse.ArgumentParser) -> int:
    """Checkpoints, notebooks, gallery -- run while holding ``OUT/.lock``."""
    from workbench.core.io import file_lock

    sets = check_arguments(args, p)
    t0 = time.perf_counter()
    given, shipped, missing = choose_checkpoints(args)
    # batches sharing --runs take turns to (re)train there and to read what they trained
    runs_lock = (file_lock(args.runs / ".lock", holder="another make_figures run") if missing
                 else contextlib.nullcontext())
    with runs_lock:
        plans = {n: plan_run(n, args.runs, args.steps, args.train_arg) for n in missing}
        ckpts = {**given, **shipped, **{n: ckpt for n, (ckpt, _) in plans.items()}}
        ckpts = {k: ckpts[k] for k in TINY_RUNS if k in ckpts}
        sets = runnable_sets(sets, ckpts)
        args.out.mkdir(parents=True, exist_ok=True)
        tasks = batch_tasks(plans, sets, args, notebook_common(ckpts, args.set))
        records, trainings, times = run_sets(tasks, len(sets), args.jobs, t0)
    meta = {"git_commit": git_commit(), "versions": versions(),
            "models": models_note(ckpts, set(shipped)),
            "checkpoints": {k: {"path": str(v), "sha256": sha256(Path(v))} for k, v in ckpts.items()
                            if Path(v).exists()}}  # a run no chosen notebook needs may be absent
    for r in records:  # the batch's provenance in every record
        r.update(checkpoints=meta["checkpoints"], versions=meta["versions"],
                 git_commit=meta["git_commit"])
    # when the last training ended (notebooks overlap it)
    meta["train_seconds"] = max((times[n][1] for n in trainings), default=0.0)
    meta["stages"] = stage_times(times, trainings, records, time.perf_counter() - t0)
    return write_gallery(args.out, records, meta, t0)


def run_sets(tasks: list[Task], n_sets: int, jobs: int,
             t0: float) -> tuple[list[dict], dict[str, float], dict[str, tuple[float, float]]]:
    """Run the batch's trainings and notebooks, a line for each as it ends; returns the notebooks'
    records (in ``figures.yaml`` order), the trainings' seconds and every task's (start, end)."""
    records: list[dict | None] = [None] * n_sets
    trainings: dict[str, float] = {}

    def done(task: Task, result: dict) -> None:  # one line per training / notebook
        elapsed = time.perf_counter() - t0
        if task.kind == "train":
            trainings[task.name] = result["seconds"]
            print(f"[figures] trained {task.name}: ok ({result['seconds']} s; "
                  f"{elapsed:.0f} s elapsed)", flush=True)
            return
        records[task.index] = result
        finished = sum(r is not None for r in records)
        print(f"[figures] {finished}/{n_sets} {result['name']}: {result['status']} "
              f"({result['seconds']} s; {elapsed:.0f} s elapsed)", flush=True)

    times = run_tasks(tasks, jobs, done)
    return records, trainings, times


def write_gallery(out: Path, records: list[dict], meta: dict, t0: float) -> int:
    """``index.html``, ``findings.*`` and ``manifest.json``; 1 if a notebook failed, else 0."""
    from workbench.core.io import atomic_write_text

    t_gallery = time.perf_counter()
    write_index(out, records, meta)
    write_findings(out, records)
    meta["stages"]["gallery_seconds"] = round(time.perf_counter() - t_gallery, 1)
    meta["stages"]["total_seconds"] = round(time.perf_counter() - t0, 1)
    manifest = {**meta, "figures": records}
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=2))
    failed = [r["name"] for r in records if r["status"] != "ok"]
    print(f"[figures] gallery: {out / 'index.html'}  findings: {out / 'findings.md'}")
    if failed:
        print(f"[figures] FAILED: {failed} (see manifest.json)", file=sys.stderr)
        return 1
    return 0
