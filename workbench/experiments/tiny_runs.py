"""The gallery's tiny runs: the shipped MAE and MFF-MAE (``workbench.experiments.shipped``) or
runs trained here, and the pixel-target MAE of the reconstruction gallery -- what each trains
with, whether a finished run can be reused, and the training itself."""
from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

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
    stop_divisor: int = 1  # stops (--set stop_after) at its steps // stop_divisor, same schedule


DYNAMICS_SETTINGS = ("--seed", "0", "--set", "threads=1", "--set", "snapshot_steps=log",
                     "--set", "knn_every=0")
TINY_RUNS = {
    # the shipped runs' own command (seed 0, one thread): --train retrains them exactly
    "mae": TinyRun("mae", "mae-tiny", ("--seed", "0", "--set", "threads=1"), shipped="mae"),
    "mff": TinyRun("mff", "mff-tiny", ("--seed", "0", "--set", "threads=1"), shipped="mff"),
    # MAE on plain pixels (no per-patch normalisation of the target): what the official MAE demo
    # reconstructs with, for the reconstruction gallery. It only draws one figure and is never
    # probed, so a sixth of the others' steps (100 of the regime's 600) keeps it short.
    "pixels": TinyRun("mae", "mae-pixels-tiny", ("--set", "norm_pix_loss=false"), steps_divisor=6),
    # the training-dynamics figures: the shipped runs' own command with weight snapshots at
    # log-spaced steps, stopped at a third of its schedule (step 200 of 600, by when the monitor's
    # probe has made most of its gain), so that every probe can be drawn over training
    # (the feature monitor off: the notebook probes every snapshot; the weights do not change)
    "mae_dynamics": TinyRun("mae", "mae-tiny-dynamics", DYNAMICS_SETTINGS, stop_divisor=3),
    "mff_dynamics": TinyRun("mff", "mff-tiny-dynamics", DYNAMICS_SETTINGS, stop_divisor=3),
}
# the runs a gallery entry waits for unless it names its `needs:` (figures.yaml)
GALLERY_RUNS = ("mae", "mff", "pixels")


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

    total = run_steps(run, steps)
    stop = (["--set", f"stop_after={max(1, total // run.stop_divisor)}"]
            if run.stop_divisor > 1 else [])
    return ["train", "--model", run.kind, "--preset", "tiny", "--data", LEARNING_REGIME["data"],
            "--device", "cpu", "--steps", str(total), *extra, *run.settings, *stop]


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
        scale = model_scale(Path(ckpts[name]))
        if name in shipped:
            prov = SHIPPED_RUNS[TINY_RUNS[name].shipped].read_provenance()
            check = prov["learning_check"]
            parts.append(f"{label}: shipped weights ({scale}; seed {prov['seed']}, "
                         f"commit {str(prov['commit'])[:10]}; linear probe "
                         f"{100 * check['trained']:.1f} % vs {100 * check['init']:.1f} % at "
                         f"initialisation)")
        else:
            parts.append(f"{label}: {ckpts[name]} ({scale}; trained in this batch or given)")
    return "Models — " + "; ".join(parts) + "." if parts else ""


def model_scale(checkpoint: Path) -> str:
    """How big a model is and how it was trained, from its run folder's config.json:
    '32 px images in 4 px patches, encoder 6 blocks x 192, 600 steps of 64 on shapes'
    (what the folder does not say is left out)."""
    from workbench.core.io import run_files

    settings = run_files(checkpoint if checkpoint.is_dir() else checkpoint.parent).read_settings()
    if settings is None:
        return "scale not recorded"
    model, train = settings
    text = (f"{model.get('img_size')} px images in {model.get('patch_size')} px patches, encoder "
            f"{model.get('depth')} blocks × {model.get('embed_dim')}")
    if train.get("steps"):
        text += f", {train['steps']} steps of {train.get('batch_size')} on {train.get('data')}"
    return text


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


# What a tiny training takes, in the notebooks' ``cost`` units (about a minute and a quarter of
# one core each on the 2-core CPU): the scheduler's estimate, not a promise.
TRAIN_COST = {"mae": 3.0, "mff": 3.0, "pixels": 1.0, "mae_dynamics": 1.2,
              "mff_dynamics": 1.2}
