"""Train the gallery's tiny MAE and MFF-MAE with the CPU learning regime and ship them.

    python analysis/ship_weights.py                 # train both into runs/ship/, write weights/
    python analysis/ship_weights.py --runs DIR      # reuse finished runs of the same command
    python analysis/ship_weights.py --runs DIR --commit SHA   # ... trained at commit SHA

For each of ``workbench.experiments.shipped.SHIPPED_RUNS``: run its command (``python -m workbench train``
with the regime's data and steps, one thread, seed 0), check the encoder against its own
initialisation (``probes.learning.learning_check``; a run that fails is not shipped), rerun the
command's first steps for the fingerprint, and write ``weights/<name>/`` (float16
``model.safetensors``, ``config.json``, ``metrics.jsonl``, ``provenance.json``). Run it from a
clean checkout: the commit it records must be the code that trained the weights.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def train(run, out: Path, *extra: str) -> None:
    code = subprocess.run(run.argv(out, "--no-progress", *extra), cwd=ROOT).returncode
    if code != 0:
        raise SystemExit(f"[ship] training {run.name} into {out} failed (exit {code})")


def fingerprint(run) -> str:
    """Digest of the weights after the command's first FINGERPRINT_STEPS steps (same schedule:
    ``stop_after`` only stops early)."""
    from workbench.checkpoints import read_checkpoint
    from workbench.experiments.shipped import FINGERPRINT_STEPS, weights_digest

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / run.name
        train(run, out, "--set", f"stop_after={FINGERPRINT_STEPS}")
        return weights_digest(read_checkpoint(out / "checkpoint.pt")["model"])


def ship(run, run_dir: Path, commit: str | None = None) -> dict:
    from workbench.checkpoints import load_checkpoint, save_weights
    from workbench.core.io import atomic_write_text, run_files
    from workbench.probes.learning import initial_model, learning_check
    from workbench.core.provenance import git_commit, package_versions
    from workbench.experiments.shipped import FINGERPRINT_STEPS, SHIPPED_DTYPE, THREADS, weights_digest

    model = load_checkpoint(run_dir)
    check = learning_check(model, initial_model(run_dir))
    print(f"[ship] {run.name}: {check.summary()}", flush=True)
    if not check.passed:
        raise SystemExit(f"[ship] {run.name} does not pass the learning criterion: not shipped")
    run.folder.mkdir(parents=True, exist_ok=True)
    save_weights(model, run.weights, step=model.checkpoint_info.step, dtype=SHIPPED_DTYPE)
    shutil.copyfile(run_dir / "metrics.jsonl", run.folder / "metrics.jsonl")
    model_settings, train_settings = run_files(run_dir).read_settings()
    train_settings["out"] = f"runs/{run.name}"  # the command's folder, not where it ran here
    atomic_write_text(run.folder / "config.json", json.dumps(
        {"config": model_settings, "train_config": train_settings}, indent=2))
    record = {"name": run.name, "kind": run.kind, "seed": run.seed, "threads": THREADS,
              "command": ["python", "-m", "workbench", *run.command(f"runs/{run.name}")],
              "commit": commit or git_commit(ROOT),
              "versions": package_versions(["torch", "timm"]),
              "stored_dtype": str(SHIPPED_DTYPE).removeprefix("torch."),
              "step": model.checkpoint_info.step,
              "fingerprint": {"steps": FINGERPRINT_STEPS, "sha256": fingerprint(run)},
              "init_sha256": weights_digest(initial_model(run_dir).state_dict()),
              "learning_check": check.to_dict()}
    atomic_write_text(run.provenance, json.dumps(record, indent=2))
    return record


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "ship",
                    help="where the runs are trained (a finished run there is reused)")
    ap.add_argument("--commit", help="the commit whose code trained the reused --runs (default: "
                                     "this checkout's HEAD, which must then be clean)")
    args = ap.parse_args(argv)
    from workbench.core.provenance import git_commit
    from workbench.experiments.shipped import SHIPPED_LIMIT_BYTES, SHIPPED_RUNS, shipped_bytes

    if args.commit is None and str(git_commit(ROOT)).endswith("-dirty"):
        ap.error("the checkout has uncommitted changes: commit them first (the weights' "
                 "provenance names the commit that made them), or name it with --commit")

    for run in SHIPPED_RUNS.values():
        run_dir = args.runs / run.name
        if not (run_dir / "checkpoint.pt").exists():
            train(run, run_dir)
        else:
            train(run, run_dir, "--resume")  # finishes a cut run; says so when already complete
        ship(run, run_dir, args.commit)
    total = shipped_bytes()
    print(f"[ship] weights/: {total / 1e6:.1f} MB (limit {SHIPPED_LIMIT_BYTES / 1e6:.0f} MB)")
    return 0 if total <= SHIPPED_LIMIT_BYTES else 1

