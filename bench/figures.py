"""``make figures`` end to end, as a new user runs it, split into install / train / notebooks.

The repository's files (tracked and untracked, not ignored: no ``.venv``, ``runs/`` or
``figures/``) are copied into a temporary directory; there

1. install: ``make env`` -- a fresh virtual environment and ``pip install -e ".[test]"``.
   ``--install wheelhouse`` (default) first downloads every wheel that install needs into a local
   wheel cache (``~/.cache/mim-workbench/bench-wheels``, kept between runs; the download is timed
   separately and is not part of the install time), then times an offline install from it
   (``PIP_NO_INDEX=1``), so the figure does not depend on the network. ``--install network``
   times ``make env`` against the package registries; ``--install skip`` reuses this repository's
   ``.venv`` (no install time).
2. ``make figures`` in the copy: trains the tiny runs (``runs/`` of the copy) and runs every
   notebook with papermill (``figures/`` of the copy), notebooks starting as soon as the runs
   they read are trained. Each training's and notebook's seconds, start and end come from the
   gallery's ``manifest.json`` (``stages``), with the time the last training ended.

The repository's own ``runs/`` and ``figures/`` are never touched. There is no peer: ``ratio`` is
null and the seconds are the result.

    python bench/figures.py [--install wheelhouse|network|skip] [--keep]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common
from common import ROOT, header, table, write_result

WHEELHOUSE = Path.home() / ".cache" / "mim-workbench" / "bench-wheels"


def copy_tree(dest: Path) -> int:
    """Tracked and untracked-but-not-ignored files of the repository -> ``dest``."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    n = 0
    for rel in filter(None, files):
        src = ROOT / rel
        if not src.is_file():  # deleted in the work tree but still tracked
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)
        n += 1
    return n


def run(cmd: list[str], cwd: Path, env: dict, log: Path) -> float:
    """Run ``cmd``, output to ``log`` (its tail is printed on failure); returns seconds."""
    t = time.perf_counter()
    with open(log, "ab") as f:
        f.write(f"\n$ {' '.join(cmd)}\n".encode())
        f.flush()
        p = subprocess.run(cmd, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT)
    dt = time.perf_counter() - t
    if p.returncode:
        tail = log.read_text(errors="replace").splitlines()[-30:]
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}) after {dt:.0f} s:\n"
                           + "\n".join(tail))
    return dt


def manifest_times(manifest: dict) -> dict:
    """What the gallery's ``manifest.json`` says of the time: when the last training ended, each
    training's and notebook's seconds, start and end (``stages``), and their sums."""
    stages = manifest.get("stages", {})
    res = {"train_seconds": manifest.get("train_seconds"), "stages": stages,
           "trainings": [{"name": n, **t} for n, t in stages.get("trainings", {}).items()],
           "notebooks": [{"name": r["name"], "status": r["status"], "seconds": r["seconds"],
                          **{k: stages.get("notebooks", {}).get(r["name"], {}).get(k)
                             for k in ("start", "end")}}
                         for r in manifest.get("figures", [])]}
    # the per-task seconds add up to more than the wall time: two run at once, and notebooks
    # that read no tiny run start beside the trainings
    res["trainings_sum_seconds"] = round(sum(t["seconds"] for t in res["trainings"]), 1)
    res["notebooks_sum_seconds"] = round(sum(r["seconds"] for r in res["notebooks"]), 1)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--install", choices=("wheelhouse", "network", "skip"), default="wheelhouse")
    ap.add_argument("--python", default="python3", help="interpreter for the fresh venv")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--workdir", type=Path, help="where to make the temporary directory")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    common.setup()
    header("make figures end to end (fresh copy of the repository)")
    tmp = Path(tempfile.mkdtemp(prefix="mim-bench-figures-", dir=args.workdir))
    src = tmp / "src"
    log = tmp / "bench-figures.log"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    res: dict = {"ratio": None, "ratio_reason": "no peer: the result is the seconds",
                 "install_mode": args.install, "workdir": str(tmp),
                 "threads": "make figures runs with torch's default threads (BENCH_THREADS "
                            "applies to this script only)"}
    t_all = time.perf_counter()
    try:
        res["files_copied"] = copy_tree(src)
        venv = src / ".venv"
        if args.install == "skip":
            venv = ROOT / ".venv"
            res["install_seconds"] = None
        else:
            if args.install == "wheelhouse":
                WHEELHOUSE.mkdir(parents=True, exist_ok=True)
                print(f"downloading wheels into {WHEELHOUSE} (not part of the install time)")
                res["download_seconds"] = round(run(
                    [str(ROOT / ".venv" / "bin" / "python"), "-m", "pip", "download", "-q",
                     "--dest", str(WHEELHOUSE), f"{src}[test]", "setuptools>=64", "wheel"],
                    tmp, env, log), 1)
                env_install = {**env, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(WHEELHOUSE)}
            else:
                env_install = env
            print("install: make env (fresh venv)", flush=True)
            res["install_seconds"] = round(run(["make", "env", f"PYTHON={args.python}"], src,
                                               env_install, log), 1)
            print(f"  {res['install_seconds']} s")
        print("make figures (train + notebooks)", flush=True)
        fig_env = {**env, "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"}
        # skip: call what `make figures` calls, without make (whose stamp check could reinstall
        # the repository's own venv from the copy)
        cmd = ([str(venv / "bin" / "python"), "analysis/make_figures.py"]
               if args.install == "skip" else ["make", "figures", f"VENV={venv}"])
        res["make_figures_seconds"] = round(run(cmd, src, fig_env, log), 1)
        res.update(manifest_times(json.loads((src / "figures" / "manifest.json").read_text())))
        res["end_to_end_seconds"] = round((res["install_seconds"] or 0)
                                          + res["make_figures_seconds"], 1)
        res["figures_written"] = len(list((src / "figures").rglob("*.png")))
        res["failed_notebooks"] = [r["name"] for r in res["notebooks"] if r["status"] != "ok"]
    except Exception as e:  # noqa: BLE001 - write what was measured, then fail
        res["error"] = str(e)[-3000:]
        print(f"FAILED: {e}", file=sys.stderr)
    finally:
        res["total_seconds"] = round(time.perf_counter() - t_all, 1)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
            res["workdir"] += " (removed)"
    rows = [dict(part=p, seconds=res.get(k)) for p, k in (
        ("download (wheel cache, untimed)", "download_seconds"), ("install (make env)",
         "install_seconds"), ("last training ended at", "train_seconds"),
        ("  sum of per-training seconds", "trainings_sum_seconds"),
        ("  sum of per-notebook seconds", "notebooks_sum_seconds"),
        ("make figures total", "make_figures_seconds"))]
    rows += [dict(part=f"  {kind} {r['name']}" + ("" if r.get("status", "ok") == "ok" else " FAILED"),
                  seconds=r["seconds"], start=r.get("start"), end=r.get("end"))
             for kind, key in (("train", "trainings"), ("notebook", "notebooks"))
             for r in res.get(key, [])]
    print(table(rows, [("part", "part"), ("seconds", "seconds"), ("start", "start"),
                       ("end", "end")]))
    write_result("figures", res, args.out)
    if "error" in res:
        sys.exit(1)


if __name__ == "__main__":
    main()
