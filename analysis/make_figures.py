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
import html
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
FIGURE_SUFFIXES = (".png", ".svg", ".html")
VERSIONED = ("torch", "timm", "numpy", "matplotlib", "plotly", "papermill", "pyhessian",
             "scikit-learn", "mim-workbench")


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


# ----------------------------------------------------------------------------- checkpoints
# Bumped when what a run writes changes, so older runs are retrained rather than reused
# (2: MFF runs log their initial fusion weights at step 0; 3: runs log knn_acc).
RUN_FORMAT = 3


@dataclasses.dataclass(frozen=True)
class TinyRun:
    """One of the tiny runs of the gallery: the shipped weights of the CPU learning regime
    (``workbench.experiments.shipped``) unless ``--train`` or a checkpoint is given, else trained here."""

    kind: str  # model kind for `python -m workbench train --model`
    folder: str  # run directory under --runs
    settings: tuple[str, ...] = ()  # its own training arguments, after the user's --train-arg
    steps_divisor: int = 1  # trains for the others' steps // steps_divisor
    shipped: str | None = None  # its key in workbench.experiments.shipped.SHIPPED_RUNS, if shipped


TINY_RUNS = {
    # the shipped runs' own command (seed 0, one thread): --train retrains them exactly
    "mae": TinyRun("mae", "mae-tiny", ("--seed", "0", "--set", "threads=1"), shipped="mae"),
    "mff": TinyRun("mff", "mff-tiny", ("--seed", "0", "--set", "threads=1"), shipped="mff"),
    # MAE on plain pixels (no per-patch normalisation of the target): what the official MAE demo
    # reconstructs with, for the reconstruction gallery. It only draws one figure and is never
    # probed, so a sixth of the others' steps (100 of the regime's 600) keeps it short.
    "pixels": TinyRun("mae", "mae-pixels-tiny", ("--set", "norm_pix_loss=false"), steps_divisor=6),
}


def run_steps(run: TinyRun, steps: int | None) -> int:
    """The steps ``run`` trains for when the batch asks for ``steps`` (None: the learning
    regime's)."""
    from workbench.training.settings import LEARNING_REGIME

    total = steps if steps is not None else LEARNING_REGIME["steps"]
    return max(1, total // run.steps_divisor)


def train_request(run: TinyRun, steps: int | None, extra: list[str]) -> list[str]:
    """``python -m workbench`` arguments (without ``--out``): the tiny preset in the learning
    regime (``training.settings.LEARNING_REGIME``: its data, its steps unless ``steps``)."""
    from workbench.training.settings import LEARNING_REGIME

    return ["train", "--model", run.kind, "--preset", "tiny", "--data", LEARNING_REGIME["data"],
            "--device", "cpu", "--steps", str(run_steps(run, steps)), *extra, *run.settings]


def shipped_checkpoints(names: list[str]) -> dict[str, Path]:
    """Of the runs ``names``, those shipped under ``weights/``: name -> their weights file."""
    from workbench.experiments.shipped import SHIPPED_RUNS

    found = {}
    for name in names:
        key = TINY_RUNS[name].shipped
        if key is not None and SHIPPED_RUNS[key].weights.exists():
            found[name] = SHIPPED_RUNS[key].weights
    return found


def models_note(ckpts: dict[str, Path], shipped: set[str]) -> str:
    """Which models the figures show, for every caption: shipped (with their provenance and
    learning check) or trained in this batch / given."""
    from workbench.experiments.shipped import SHIPPED_RUNS

    parts = []
    for name in ("mae", "mff"):
        if name not in ckpts:
            continue
        label = "MAE" if name == "mae" else "MFF-MAE"
        if name in shipped:
            prov = SHIPPED_RUNS[TINY_RUNS[name].shipped].read_provenance()
            check = prov["learning_check"]
            parts.append(f"{label}: shipped weights ({prov['step']} steps, seed {prov['seed']}, "
                         f"commit {str(prov['commit'])[:10]}; linear probe "
                         f"{100 * check['trained']:.1f} % vs {100 * check['init']:.1f} % at "
                         f"initialisation)")
        else:
            parts.append(f"{label}: {ckpts[name]} (trained in this batch or given)")
    return "Models — " + "; ".join(parts) + "." if parts else ""


def request_record(run: TinyRun, steps: int | None, extra: list[str]) -> dict:
    """What ``figures-request.json`` holds: the training command and the run format."""
    return {"request": train_request(run, steps, extra), "run_format": RUN_FORMAT}


def plan_run(name: str, runs: Path, steps: int | None, extra: list[str]) -> tuple[Path, list[str] | None]:
    """The checkpoint of the tiny run ``name`` (a key of TINY_RUNS) in ``runs/<folder>`` and the
    command that trains it, or None when a finished run with the same request is already there."""
    from workbench.core.io import run_files

    run = TINY_RUNS[name]
    out = runs / run.folder
    record = request_record(run, steps, extra)
    marker = out / "figures-request.json"
    ckpt = run_files(out).checkpoint
    if ckpt.exists() and marker.exists() and json.loads(marker.read_text()) == record:
        print(f"[figures] reusing {ckpt} (same training request)")
        return ckpt, None
    return ckpt, [sys.executable, "-m", "workbench", *record["request"], "--out", str(out)]


def train_run(name: str, cmd: list[str], steps: int | None, extra: list[str]) -> dict:
    """Train the tiny run ``name`` with ``cmd`` (into a fresh ``--out``) and mark it with its
    request; raises if the training fails. Returns its record (name, seconds)."""
    out = Path(cmd[cmd.index("--out") + 1])
    if out.exists():
        shutil.rmtree(out)
    print(f"[figures] training {name} -> {out}", flush=True)
    start = time.perf_counter()
    code = subprocess.run(cmd + ["--no-progress"], cwd=ROOT).returncode
    if code != 0:
        raise RuntimeError(f"training the tiny {name} model into {out} failed "
                           f"(exit {code}); see its messages above")
    (out / "figures-request.json").write_text(
        json.dumps(request_record(TINY_RUNS[name], steps, extra)))
    return {"name": name, "seconds": round(time.perf_counter() - start, 1)}


def threads_per_job(jobs: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(1, jobs))


# ----------------------------------------------------------------------------- notebooks
def load_parameter_sets(path: Path) -> list[dict]:
    """``figures.yaml``: a list of {name, notebook, parameters}."""
    sets = yaml.safe_load(path.read_text())
    for s in sets:
        if not (NOTEBOOKS / s["notebook"]).exists():
            raise FileNotFoundError(f"{path}: notebook {s['notebook']} not found in {NOTEBOOKS}")
    return sets


def _limit_threads(threads: int) -> None:
    """Pool initializer: kernels started from this worker use ``threads`` CPU threads."""
    os.environ["OMP_NUM_THREADS"] = str(threads)


# What a tiny training takes, in the notebooks' ``cost`` units (about a minute and a quarter of
# one core each on the 2-core CPU): the scheduler's estimate, not a promise.
TRAIN_COST = {"mae": 3.0, "mff": 3.0, "pixels": 1.0}
DEFAULT_NEEDS = tuple(TINY_RUNS)  # the runs a notebook waits for unless its entry says `needs:`


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


def priorities(tasks: list[Task]) -> dict[str, float]:
    """A task's cost plus the cost of every task that waits for it: trainings that unblock most
    notebooks start first, then the costliest notebooks (critical-path list scheduling)."""
    waiting = {t.name: sum(u.cost for u in tasks if t.kind == "train" and t.name in u.needs)
               for t in tasks}
    return {t.name: t.cost + waiting[t.name] for t in tasks}


def _submit(pool, task: Task):
    """``task`` running in ``pool``, or (no pool) run here now: a future either way."""
    import concurrent.futures as cf

    if pool is not None:
        return pool.submit(task.run)
    fut: cf.Future = cf.Future()
    try:
        fut.set_result(task.run())
    except Exception as e:  # noqa: BLE001 - handled by the caller like a worker's
        fut.set_exception(e)
    return fut


def run_tasks(tasks: list[Task], jobs: int, done) -> dict[str, tuple[float, float]]:
    """Run ``tasks``, at most ``jobs`` at a time in worker processes (the cores split between
    them), each as soon as the trainings it needs are done, by :func:`priorities`; ``done(task,
    result)`` for each as it ends. Returns {name: (start, end)} seconds from the start. A failed
    training starts nothing more and is raised once the running tasks end."""
    import concurrent.futures as cf
    import multiprocessing

    rank = priorities(tasks)
    pending = sorted(tasks, key=lambda t: -rank[t.name])
    trained: set[str] = set()
    times: dict[str, tuple[float, float]] = {}
    start, failure = time.perf_counter(), None
    pool = (cf.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_limit_threads, initargs=(threads_per_job(jobs),))
            if jobs > 1 else None)
    running: dict = {}
    try:
        while pending or running:
            while failure is None and len(running) < jobs:
                task = next((t for t in pending if set(t.needs) <= trained), None)
                if task is None:
                    break
                pending.remove(task)
                began = time.perf_counter() - start
                running[_submit(pool, task)] = (task, began)
            if not running and failure is not None:
                break
            if not running:  # only tasks waiting for a run that no task trains: a bug
                missing = sorted({r for t in pending for r in t.needs} - trained)
                raise RuntimeError(f"tasks {[t.name for t in pending]} wait for runs that are "
                                   f"not trained: {missing}")
            finished, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for fut in finished:
                task, began = running.pop(fut)
                times[task.name] = (round(began, 1), round(time.perf_counter() - start, 1))
                if fut.exception() is not None:
                    failure = failure or fut.exception()
                    continue
                if task.kind == "train":
                    trained.add(task.name)
                done(task, fut.result())
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    if failure is not None:
        raise failure
    return times


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
              "PIXEL_CHECKPOINT": str(Path(ckpts["pixels"]).resolve()) if "pixels" in ckpts else None}
    for item in sets:
        key, _, value = item.partition("=")
        common[key] = yaml.safe_load(value)
    return common


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
                         (run_notebook, e, args.out, common), i) for i, e in enumerate(sets)]


def stage_times(times: dict[str, tuple[float, float]], trainings: dict[str, float],
                records: list[dict], wall: float) -> dict:
    """``manifest.json``'s ``stages``: each training's and notebook's seconds and its start / end
    in the batch (seconds from the start; trainings and notebooks overlap), and the wall time."""
    return {"trainings": {n: {"seconds": s, "start": times[n][0], "end": times[n][1]}
                          for n, s in trainings.items()},
            "notebooks": {r["name"]: {"seconds": r["seconds"], "start": times[r["name"]][0],
                                      "end": times[r["name"]][1]} for r in records},
            "trainings_and_notebooks_seconds": round(wall, 1)}


# ----------------------------------------------------------------------------- gallery
PARAMS_FILE = ROOT / "analysis" / "figures.yaml"
SINGULAR = {"images": "image", "seeds": "seed", "minibatches": "minibatch", "probes": "probe"}
GALLERY_STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:auto;padding:0 12px}"
    "section{border-top:1px solid #ccc;margin-bottom:24px}"
    ".figures{display:grid;grid-template-columns:repeat(2,minmax(0,1fr));gap:8px;"
    "align-items:start}.figures .wide{grid-column:1/-1}"
    ".figures img{max-width:100%;height:auto;display:block;margin:auto}"
    "figure{margin:0}figcaption{margin:8px 0;line-height:1.4}.counts{color:#555}"
    ".failed{color:#b00;font-weight:bold}")
FINDINGS_STYLE = (
    "body{font-family:sans-serif;max-width:1400px;margin:auto;padding:0 12px}"
    "table{border-collapse:collapse;font-size:13px}th,td{border:1px solid #bbb;padding:4px 6px;"
    "vertical-align:top;text-align:left}th{background:#eee}img{max-width:100%;height:auto}")


def load_captions(path: Path = PARAMS_FILE) -> dict[str, str]:
    """Captions of the ``figures.yaml`` entries, by entry name and by notebook file (so a
    parameter set of its own, e.g. ``--params``, still gets its notebook's caption)."""
    try:
        sets = yaml.safe_load(path.read_text()) or []
    except OSError:
        return {}
    captions: dict[str, str] = {}
    for s in sets:
        if s.get("caption"):
            captions.setdefault(s["notebook"], s["caption"])
            captions[s["name"]] = s["caption"]
    return captions


def _literal_assignments(source: str) -> dict:
    """``NAME = <literal>`` lines of a parameters cell."""
    import ast

    try:
        tree = ast.parse(source)
    except SyntaxError:
        return {}
    values = {}
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)):
            with contextlib.suppress(ValueError, TypeError, SyntaxError):
                values[node.targets[0].id] = ast.literal_eval(node.value)
    return values


def notebook_parameters(path: Path) -> dict:
    """The literal parameters of a notebook: its ``parameters`` cell, then papermill's
    ``injected-parameters`` cell (which wins); {} when the notebook cannot be read."""
    try:
        nb = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    values: dict = {}
    for cell in nb.get("cells", []):
        tags = set(cell.get("metadata", {}).get("tags", []))
        if cell.get("cell_type") == "code" and tags & {"parameters", "injected-parameters"}:
            source = cell.get("source", "")
            values.update(_literal_assignments("".join(source) if isinstance(source, list)
                                               else source))
    return values


def figure_parameters(out: Path, record: dict) -> dict:
    """The parameters a figure set ran with: the executed notebook's (defaults included; the
    source notebook's when it is missing), then the record's."""
    found = notebook_parameters(out / record["executed"]) or \
        notebook_parameters(NOTEBOOKS / record["notebook"])
    return {**found, **record.get("parameters", {})}


def read_claims(folder: Path) -> list[dict]:
    """A notebook folder's ``claims.json`` (a list of Claim dicts), or []."""
    path = folder / "claims.json"
    return json.loads(path.read_text()) if path.exists() else []


def _count(n, noun: str) -> str:
    """'2 Lanczos probes', '1 Lanczos probe'."""
    if n == 1:
        head, _, last = noun.rpartition(" ")
        noun = f"{head} {SINGULAR.get(last, last)}".strip()
    return f"{n} {noun}"


def _ratios(values) -> str:
    return ", ".join(f"{float(v):g}" for v in values)


# parameter -> its n in words (None values are left out)
PARAMETER_COUNTS = (
    ("N_IMAGES", lambda n: _count(n, "images")),
    ("N_PROBE", lambda n: f"{n} probe training + {n} held-out images"),
    ("MASK_RATIO", lambda r: f"mask ratio {float(r):g}"),
    ("HIGH_RATIOS", lambda rs: f"also at {_ratios(rs)}"),
    ("RATIOS", lambda rs: f"{len(rs)} mask ratios ({_ratios(rs)})"),
    ("SWEEP_STEPS", lambda n: f"{n} training steps per ratio"),
    ("SUPERVISED_STEPS", lambda n: f"{n} supervised steps"),
    ("SUPERVISED_BATCH", lambda n: f"supervised minibatches of {n} images"),
    ("TOP_K", lambda k: f"top {k} eigenvalues per minibatch"),
    ("TRACE_SAMPLES", lambda n: _count(n, "Hutchinson probes")),
    ("DENSITY_PROBES", lambda n: _count(n, "Lanczos probes")),
)


def parameter_counts(params: dict) -> list[str]:
    """The n's of a figure set's parameters, in words (those it has)."""
    counts = [say(params[key]) for key, say in PARAMETER_COUNTS
              if params.get(key) not in (None, [])]
    if params.get("BATCH_SIZE") is not None:
        batches, size = params.get("N_BATCHES"), params["BATCH_SIZE"]
        counts.insert(0, f"minibatches of {size} images" if batches is None
                      else f"{_count(batches, 'minibatches')} × {size} images")
    return counts


def claim_counts(claims: list[dict]) -> list[str]:
    """Each distinct sample behind the claims, from their ``sizes`` (else ``n``)."""
    seen: list[str] = []
    for c in claims:
        sizes = c.get("sizes") or {}
        text = ", ".join(_count(v, k) for k, v in sizes.items()) if sizes else \
            (f"n {c['n']}" if c.get("n") is not None else "")
        if text and text not in seen:
            seen.append(text)
    return [f"claim over {t}" for t in seen]


def caption_counts(params: dict, claims: list[dict]) -> str:
    """The run's n's for a caption: 'n: 4 minibatches × 16 images; ...; claim over 1 seed, ...'."""
    counts = parameter_counts(params) + claim_counts(claims)
    return "n: " + "; ".join(counts) if counts else ""


def figure_caption(caption: str, counts: str) -> str:
    if not (caption or counts):
        return ""
    return (f"<figcaption class='caption'>{html.escape(caption)} "
            f"<span class='counts'>{html.escape(counts)}</span></figcaption>")


def png_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from a PNG's header, or None."""
    try:
        with open(path, "rb") as f:
            head = f.read(24)
    except OSError:
        return None
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def figure_item(out: Path, name: str) -> str:
    """One figure file in the grid: a PNG (spanning both columns when wide; a click opens it at
    full size) or a link to an interactive HTML figure."""
    link = html.escape(name, quote=True)
    label = html.escape(Path(name).name)
    if name.endswith(".html"):
        return f"<div><a href='{link}'>{label} (interactive)</a></div>"
    size = png_size(out / name)
    wide = size is not None and size[0] >= 1.6 * size[1]
    return (f"<a class='{'wide' if wide else 'narrow'}' href='{link}' title='{label}: full size'>"
            f"<img src='{link}' alt='{label}'></a>")


def figure_section(out: Path, record: dict, caption: str) -> str:
    """One figure set: heading, notebook and run time, the figures, the caption under them."""
    figs = [f for f in record["files"] if f.endswith((".png", ".html"))]
    status = "" if record["status"] == "ok" else \
        f" <span class='failed'>FAILED: {html.escape(record.get('error', ''))}</span>"
    counts = caption_counts(figure_parameters(out, record), read_claims(out / record["name"]))
    items = "".join(figure_item(out, f) for f in figs)
    return (f"<section id='{html.escape(record['name'], quote=True)}'>"
            f"<h2>{html.escape(record['name'])}</h2><p>notebook "
            f"<a href='{html.escape(record['executed'], quote=True)}'>"
            f"{html.escape(record['notebook'])}</a>, {record['seconds']} s{status}</p>"
            f"<figure><div class='figures'>{items}</div>"
            f"{figure_caption(caption, counts)}</figure></section>")


def write_index(out: Path, records: list[dict], meta: dict,
                captions: dict[str, str] | None = None) -> None:
    """``index.html``: every figure set with its caption (``captions`` by entry name or notebook;
    default: those in ``analysis/figures.yaml``) and the run's n's."""
    from workbench.core.io import atomic_write_text

    captions = load_captions() if captions is None else captions
    models = f" {meta['models']}" if meta.get("models") else ""  # every caption says which
    sections = [figure_section(out, r, captions.get(r["name"], captions.get(r["notebook"], ""))
                               + models) for r in records]
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>MIM Workbench figures</title>"
            f"<style>{GALLERY_STYLE}</style></head><body><h1>MIM Workbench figures</h1>"
            f"<p>commit {html.escape(str(meta['git_commit']))}; "
            f"{html.escape(meta.get('models', ''))} "
            "<a href='findings.html'>findings</a> (<a href='findings.md'>markdown</a>); "
            f"<a href='manifest.json'>manifest</a></p>{''.join(sections)}</body></html>")
    atomic_write_text(out / "index.html", page)


QUICK_PROFILE = ("One training seed per model (the tiny MAE and MFF-MAE runs), so claims about "
                 "training (fusion movement, supervised fusion) stay inconclusive, and every other "
                 "interval covers only the images or minibatches drawn inside that one run, not "
                 "training randomness (a permutation test over 5 or fewer minibatches cannot "
                 "reject at all, so such a claim stays inconclusive). The claims of every "
                 "notebook form one Holm family. `make evidence` runs the seeds "
                 "(`analysis/evidence.py`).")


def markdown_html(text: str) -> str:
    """Markdown -> HTML with mistune (a jupyterlab dependency, through nbconvert): tables as
    <table>, any raw HTML in the text escaped."""
    import mistune

    return mistune.create_markdown(escape=True, plugins=["table"])(text)


def findings_page(markdown: str, forest: bool) -> str:
    """``findings.html``: the findings markdown as a page, with the forest plot under it."""
    plot = ("<h2>Forest plot</h2><p><a href='forest.png'><img src='forest.png' "
            "alt='forest plot: effect and 95% interval of every claim'></a></p>" if forest else "")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>MIM Workbench findings"
            f"</title><style>{FINDINGS_STYLE}</style></head><body><p><a href='index.html'>"
            f"figures</a> · <a href='findings.md'>markdown</a></p>{markdown_html(markdown)}"
            f"{plot}</body></html>")


def write_findings(out: Path, records: list[dict]) -> None:
    """``findings.md``, ``findings.html`` and ``forest.png`` from every notebook's
    ``claims.json``. The claims of all notebooks are one report, so one family: their verdicts
    are Holm-adjusted over it (``workbench.experiments.findings.adjust_family``)."""
    from workbench import plots
    from workbench.experiments.findings import Claim, adjust_family, findings_markdown
    from workbench.core.io import atomic_write_text

    claims = adjust_family([Claim.from_dict(c) for r in records
                            for c in read_claims(out / r["name"])])
    markdown = findings_markdown(claims, "quick", QUICK_PROFILE)
    atomic_write_text(out / "findings.md", markdown)
    if claims:
        plots.save_figure(plots.forest_figure(claims, "quick profile (one seed): effect ± 95% "
                                              "interval"), out, "forest")
    atomic_write_text(out / "findings.html", findings_page(markdown, forest=bool(claims)))


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
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
    p.add_argument("--params", type=Path, default=ROOT / "analysis" / "figures.yaml")
    p.add_argument("--only", action="append", help="run only these figure names")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="notebook parameter for every notebook (YAML value)")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                   help="trainings / notebooks run at once, the cores split between them "
                        "(default: 2, or 1 on a 1-core machine)")
    p.add_argument("--lock-timeout", type=float, default=None, metavar="SECONDS",
                   help="how long to wait for another batch writing the same --out "
                        "(default: as long as it takes; 0: fail at once)")
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


def run_batch(args: argparse.Namespace, p: argparse.ArgumentParser) -> int:
    """Checkpoints, notebooks, gallery -- run while holding ``OUT/.lock``."""
    from workbench.checkpoints import CheckpointError, read_checkpoint
    from workbench.core.io import atomic_write_text, file_lock

    for flag in TINY_RUNS:
        given = getattr(args, flag)
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

    t0 = time.perf_counter()
    given = {k: getattr(args, k) for k in TINY_RUNS if getattr(args, k) is not None}
    missing = [k for k in TINY_RUNS if k not in given]
    # the shipped weights stand for the default request only: --train, --steps or --train-arg
    # ask for other runs, which are trained
    default = not (args.train or args.steps is not None or args.train_arg)
    shipped = shipped_checkpoints([k for k in missing if k != "pixels"]) if default else {}
    given.update(shipped)
    missing = [k for k in missing if k not in shipped]
    if "pixels" in missing and (set(given) - set(shipped)) & {"mae", "mff"}:
        # a tiny pixel-target model beside external models would not be their like: the
        # reconstruction notebook then skips its pixel-target figure unless --pixels is given
        missing.remove("pixels")
    # batches sharing --runs take turns to (re)train there and to read what they trained
    runs_lock = (file_lock(args.runs / ".lock", holder="another make_figures run") if missing
                 else contextlib.nullcontext())
    with runs_lock:
        plans = {n: plan_run(n, args.runs, args.steps, args.train_arg) for n in missing}
        ckpts = {**given, **{n: ckpt for n, (ckpt, _) in plans.items()}}
        ckpts = {k: ckpts[k] for k in TINY_RUNS if k in ckpts}
        common = notebook_common(ckpts, args.set)
        args.out.mkdir(parents=True, exist_ok=True)
        tasks = batch_tasks(plans, sets, args, common)
        records: list[dict | None] = [None] * len(sets)
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
            print(f"[figures] {finished}/{len(sets)} {result['name']}: {result['status']} "
                  f"({result['seconds']} s; {elapsed:.0f} s elapsed)", flush=True)

        times = run_tasks(tasks, args.jobs, done)
    meta = {"git_commit": git_commit(), "versions": versions(),
            "models": models_note(ckpts, set(shipped)),
            "checkpoints": {k: {"path": str(v), "sha256": sha256(Path(v))} for k, v in ckpts.items()
                            if Path(v).exists()}}  # a run no chosen notebook needs may be absent
    for r in records:  # the batch's provenance in every record
        r.update(checkpoints=meta["checkpoints"], versions=meta["versions"],
                 git_commit=meta["git_commit"])
    trained_by = max((times[n][1] for n in trainings), default=0.0)
    meta["train_seconds"] = trained_by  # when the last training ended (notebooks overlap it)
    meta["stages"] = stage_times(times, trainings, records, time.perf_counter() - t0)
    t_gallery = time.perf_counter()
    write_index(args.out, records, meta)
    write_findings(args.out, records)
    meta["stages"]["gallery_seconds"] = round(time.perf_counter() - t_gallery, 1)
    meta["stages"]["total_seconds"] = round(time.perf_counter() - t0, 1)
    manifest = {**meta, "figures": records}
    atomic_write_text(args.out / "manifest.json", json.dumps(manifest, indent=2))
    failed = [r["name"] for r in records if r["status"] != "ok"]
    print(f"[figures] gallery: {args.out / 'index.html'}  findings: {args.out / 'findings.md'}")
    if failed:
        print(f"[figures] FAILED: {failed} (see manifest.json)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
