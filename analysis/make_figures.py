"""Regenerate every figure into a gallery: train (or take) checkpoints, run the notebooks with
papermill, and write ``manifest.json``, ``index.html`` and ``findings.md``.

    python analysis/make_figures.py                       # tiny MAE, MFF-MAE, pixel-target MAE
    python analysis/make_figures.py --mae A.pth --mff B.pth --out figures-vitb   # external models

Each notebook writes its figures and a ``<name>.json`` of the numbers behind them into its own
folder, and may write ``claims.json`` (a list of ``workbench.findings.Claim`` dicts) that
``findings.md`` and the forest plot ``forest.png`` collect (``workbench.findings``). A failing
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
    from workbench.provenance import git_commit as commit_of

    return commit_of(ROOT)


def versions() -> dict[str, str]:
    """Installed versions of the packages behind the figures (those installed)."""
    from workbench.provenance import package_versions

    return {k: v for k, v in package_versions(VERSIONED).items() if v is not None}


# ----------------------------------------------------------------------------- checkpoints
# Bumped when what a run writes changes, so older runs are retrained rather than reused
# (2: MFF runs log their initial fusion weights at step 0).
RUN_FORMAT = 2


@dataclasses.dataclass(frozen=True)
class TinyRun:
    """One of the tiny runs the gallery trains when no checkpoint is given for it."""

    kind: str  # model kind for `python -m workbench train --model`
    folder: str  # run directory under --runs
    settings: tuple[str, ...] = ()  # its own training arguments, after the user's --train-arg
    steps_divisor: int = 1  # trains for the others' steps // steps_divisor


TINY_RUNS = {
    "mae": TinyRun("mae", "mae-tiny"),
    "mff": TinyRun("mff", "mff-tiny"),
    # MAE on plain pixels (no per-patch normalisation of the target): what the official MAE demo
    # reconstructs with, for the reconstruction gallery. It only draws one figure, so a third of
    # the others' steps (100 of the tiny preset's 300) keeps the added training short.
    "pixels": TinyRun("mae", "mae-pixels-tiny", ("--set", "norm_pix_loss=false"), steps_divisor=3),
}


def run_steps(run: TinyRun, steps: int | None) -> int | None:
    """The steps ``run`` trains for when the batch asks for ``steps`` (None: the preset's)."""
    if run.steps_divisor == 1:
        return steps
    from workbench.training.settings import PRESET_TRAIN_DEFAULTS

    total = steps if steps is not None else PRESET_TRAIN_DEFAULTS["tiny"]["steps"]
    return max(1, total // run.steps_divisor)


def train_request(run: TinyRun, steps: int | None, extra: list[str]) -> list[str]:
    cmd = ["train", "--model", run.kind, "--preset", "tiny", "--data", "builtin", "--device", "cpu"]
    steps = run_steps(run, steps)
    if steps is not None:
        cmd += ["--steps", str(steps)]
    return cmd + extra + list(run.settings)


def request_record(run: TinyRun, steps: int | None, extra: list[str]) -> dict:
    """What ``figures-request.json`` holds: the training command and the run format."""
    return {"request": train_request(run, steps, extra), "run_format": RUN_FORMAT}


def plan_run(name: str, runs: Path, steps: int | None, extra: list[str]) -> tuple[Path, list[str] | None]:
    """The checkpoint of the tiny run ``name`` (a key of TINY_RUNS) in ``runs/<folder>`` and the
    command that trains it, or None when a finished run with the same request is already there."""
    from workbench.io import run_files

    run = TINY_RUNS[name]
    out = runs / run.folder
    record = request_record(run, steps, extra)
    marker = out / "figures-request.json"
    ckpt = run_files(out).checkpoint
    if ckpt.exists() and marker.exists() and json.loads(marker.read_text()) == record:
        print(f"[figures] reusing {ckpt} (same training request)")
        return ckpt, None
    return ckpt, [sys.executable, "-m", "workbench", *record["request"], "--out", str(out)]


def ensure_runs(names: list[str], runs: Path, steps: int | None, extra: list[str],
                jobs: int) -> dict[str, Path]:
    """Train the tiny runs (keys of TINY_RUNS) that are missing or stale, up to ``jobs`` at a time
    (the cores split between them: small models use 2 cores poorly, so two 1-core runs finish
    sooner than two 2-core runs one after the other). A pool: the next training starts as soon as
    one ends, so the short pixel run (listed last) fills the time the longer runs leave."""
    import concurrent.futures as cf

    plans = {n: plan_run(n, runs, steps, extra) for n in names}
    todo = [(n, cmd) for n, (_, cmd) in plans.items() if cmd is not None]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads_per_job(min(jobs, max(1, len(todo)))))}

    def train_one(name: str, cmd: list[str]) -> None:
        out = Path(cmd[cmd.index("--out") + 1])
        if out.exists():
            shutil.rmtree(out)
        print(f"[figures] training {name} -> {out}", flush=True)
        code = subprocess.run(cmd + ["--no-progress"], cwd=ROOT, env=env).returncode
        if code != 0:
            raise RuntimeError(f"training the tiny {name} model into {out} failed "
                               f"(exit {code}); see its messages above")
        (out / "figures-request.json").write_text(
            json.dumps(request_record(TINY_RUNS[name], steps, extra)))

    with cf.ThreadPoolExecutor(max(1, jobs)) as pool:
        futures = [pool.submit(train_one, n, cmd) for n, cmd in todo]
        for fut in cf.as_completed(futures):
            if fut.exception() is not None:  # a failed training: start no more, report it
                pool.shutdown(wait=True, cancel_futures=True)
                raise fut.exception()
    return {n: ckpt for n, (ckpt, _) in plans.items()}


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


def run_notebooks(sets: list[dict], out: Path, common: dict, meta: dict, jobs: int) -> list[dict]:
    """Run every entry, ``jobs`` notebooks at a time (each in its own kernel with the cores split
    between them; the costliest first, by the entries' optional ``cost``); records in ``sets``
    order."""
    from tqdm.auto import tqdm

    records: list[dict | None] = [None] * len(sets)
    bar = tqdm(total=len(sets), desc="notebooks", unit="nb")

    def done(i: int, record: dict) -> None:
        records[i] = record
        bar.update(1)
        print(f"[figures] {record['name']}: {record['status']} ({record['seconds']} s)", flush=True)

    if jobs <= 1 or len(sets) <= 1:
        for i, entry in enumerate(sets):
            done(i, run_notebook(entry, out, common, meta))
    else:
        import concurrent.futures as cf
        import multiprocessing

        order = sorted(range(len(sets)), key=lambda i: -float(sets[i].get("cost", 1)))
        with cf.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                                    initializer=_limit_threads,
                                    initargs=(threads_per_job(jobs),)) as pool:
            futures = {pool.submit(run_notebook, sets[i], out, common, meta): i for i in order}
            for fut in cf.as_completed(futures):
                done(futures[fut], fut.result())
    bar.close()
    return records  # type: ignore[return-value]


def run_notebook(entry: dict, out: Path, common: dict, meta: dict) -> dict:
    """Execute one notebook into ``out/<name>/``; the record carries its provenance (parameters,
    checkpoints with SHA-256, package versions, git commit, seconds) so each figure stands alone."""
    import papermill as pm

    name = entry["name"]
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    params = {**common, **entry.get("parameters", {}), "OUTPUT_DIR": str(folder)}
    record = {"name": name, "notebook": entry["notebook"], "parameters": params,
              "executed": str((folder / entry["notebook"]).relative_to(out)),
              "checkpoints": meta["checkpoints"], "versions": meta["versions"],
              "git_commit": meta["git_commit"]}
    start = time.perf_counter()
    try:
        pm.execute_notebook(str(NOTEBOOKS / entry["notebook"]), str(folder / entry["notebook"]),
                            parameters=params, cwd=str(NOTEBOOKS), progress_bar=False,
                            kernel_name="python3")
        record["status"] = "ok"
    except Exception as e:  # noqa: BLE001 - recorded, the batch goes on
        record["status"] = "failed"
        record["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"
    record["seconds"] = round(time.perf_counter() - start, 2)
    record["files"] = sorted(str(p.relative_to(out)) for p in folder.rglob("*")
                             if p.suffix in FIGURE_SUFFIXES + (".json",))
    return record


# ----------------------------------------------------------------------------- gallery
def write_index(out: Path, records: list[dict], meta: dict) -> None:
    from workbench.io import atomic_write_text

    rows = []
    for r in records:
        figs = [f for f in r["files"] if f.endswith(FIGURE_SUFFIXES)]
        status = "" if r["status"] == "ok" else f" <b style='color:#b00'>FAILED: {html.escape(r.get('error', ''))}</b>"
        items = []
        for f in figs:
            link = html.escape(f)
            if f.endswith(".png"):
                items.append(f"<a href='{link}'><img src='{link}' style='max-width:420px;margin:4px'></a>")
            elif f.endswith(".html"):
                items.append(f"<div><a href='{link}'>{html.escape(Path(f).name)} (interactive)</a></div>")
        rows.append(f"<section><h2>{html.escape(r['name'])}</h2><p>notebook "
                    f"<a href='{html.escape(r['executed'])}'>{html.escape(r['notebook'])}</a>, "
                    f"{r['seconds']} s{status}</p>{''.join(items)}</section>")
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>MIM Workbench figures</title>"
            "<style>body{font-family:sans-serif;max-width:1400px;margin:auto}section{border-top:"
            "1px solid #ccc}</style></head><body><h1>MIM Workbench figures</h1>"
            f"<p>commit {html.escape(str(meta['git_commit']))}; <a href='findings.md'>findings</a> "
            "(<a href='forest.png'>forest plot</a>); "
            f"<a href='manifest.json'>manifest</a></p>{''.join(rows)}</body></html>")
    atomic_write_text(out / "index.html", page)


QUICK_PROFILE = ("One training seed per model (the tiny MAE and MFF-MAE runs), so claims about "
                 "training (fusion movement, supervised fusion) stay inconclusive, and every other "
                 "interval covers only the images or minibatches drawn inside that one run, not "
                 "training randomness. `make evidence` runs the seeds (`analysis/evidence.py`).")


def write_findings(out: Path, records: list[dict]) -> None:
    """``findings.md`` and ``forest.png`` from every notebook's ``claims.json``."""
    from workbench import plots
    from workbench.findings import Claim, findings_markdown
    from workbench.io import atomic_write_text

    claims = []
    for r in records:
        path = out / r["name"] / "claims.json"
        if path.exists():
            claims += [Claim.from_dict(c) for c in json.loads(path.read_text())]
    atomic_write_text(out / "findings.md", findings_markdown(claims, "quick", QUICK_PROFILE))
    if claims:
        plots.save_figure(plots.forest_figure(claims, "quick profile (one seed): effect ± 95% "
                                              "interval"), out, "forest")


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
    p.add_argument("--steps", type=int, help="training steps for the tiny runs (default: the CLI's)")
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

    from workbench.io import FileLocked, file_lock, remove_stale_temps

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
    from workbench.io import atomic_write_text, file_lock

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
    if "pixels" in missing and ("mae" in given or "mff" in given):
        # a tiny pixel-target model beside external models would not be their like: the
        # reconstruction notebook then skips its pixel-target figure unless --pixels is given
        missing.remove("pixels")
    # batches sharing --runs take turns to (re)train there
    runs_lock = (file_lock(args.runs / ".lock", holder="another make_figures run") if missing
                 else contextlib.nullcontext())
    with runs_lock:
        ckpts = {**given, **ensure_runs(missing, args.runs, args.steps, args.train_arg, args.jobs)}
        ckpts = {k: ckpts[k] for k in TINY_RUNS if k in ckpts}
    train_seconds = round(time.perf_counter() - t0, 1)
    common = {"MAE_CHECKPOINT": str(Path(ckpts["mae"]).resolve()),
              "MFF_CHECKPOINT": str(Path(ckpts["mff"]).resolve()),
              "MFF_RUN_DIR": str(Path(ckpts["mff"]).resolve().parent),
              "MAE_RUN_DIR": str(Path(ckpts["mae"]).resolve().parent),
              # None: no pixel-target model (external --mae/--mff without --pixels)
              "PIXEL_CHECKPOINT": str(Path(ckpts["pixels"]).resolve()) if "pixels" in ckpts else None}
    for item in args.set:
        key, _, value = item.partition("=")
        common[key] = yaml.safe_load(value)

    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"git_commit": git_commit(), "versions": versions(), "train_seconds": train_seconds,
            "checkpoints": {k: {"path": str(v), "sha256": sha256(Path(v))} for k, v in ckpts.items()}}
    records = run_notebooks(sets, args.out, common, meta, args.jobs)
    manifest = {**meta, "figures": records}
    atomic_write_text(args.out / "manifest.json", json.dumps(manifest, indent=2))
    write_index(args.out, records, meta)
    write_findings(args.out, records)
    failed = [r["name"] for r in records if r["status"] != "ok"]
    print(f"[figures] gallery: {args.out / 'index.html'}  findings: {args.out / 'findings.md'}")
    if failed:
        print(f"[figures] FAILED: {failed} (see manifest.json)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
