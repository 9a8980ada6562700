"""The evidence profile: the papers' claims over training seeds, minibatches and mask ratios.

    python analysis/evidence.py                    # CPU profile into evidence/ (make evidence)
    python analysis/evidence.py --profile gpu      # the same plan at the gpu-small preset
    python analysis/evidence.py --out DIR --jobs 2

The plan is a set of jobs -- pretrain MAE and MFF-MAE per seed, the supervised fusion comparison
per seed, a short MAE run per (mask ratio, seed), then per seed the frequency, linear-probe and
Hessian measurements, the fine-tuning series and the training dynamics (the gallery's probes at
every weight snapshot) on the finished runs -- run ``--jobs`` at a time with the cores split
between them. Each job writes ``OUT/jobs/<job>.json`` when it finishes (atomically) and training
runs checkpoint as they go, so running the command again resumes: finished jobs are skipped and a
killed training run continues from its checkpoint. A line is printed as each job ends, and at the
end ``OUT/claims.json``, ``OUT/findings.md`` and ``OUT/forest.png`` are written through
``workbench.experiments.findings`` -- the same claim functions the notebooks call on one seed.
"""
# The command line (its help: this docstring) of the plan (evidence_plan), its jobs
# (evidence_jobs) and its report (evidence_report).
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from workbench.experiments.evidence_jobs import execute
from workbench.experiments.evidence_plan import (PROFILES, Job, Profile, load_results,  # noqa: F401
                                                 missing_results, plan, result_path)
from workbench.experiments.evidence_report import (append_appendix, add_wall_seconds,
                                                   evidence_claims, wall_seconds, write_report)

ROOT = Path(__file__).resolve().parents[2]


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


def rebuild_report(out: Path, p: Profile, jobs: list[Job]) -> int:
    """``--report-only``: the report from ``OUT/jobs/*.json`` alone (no training, no probe)."""
    missing = missing_results(out, jobs)  # the later stages' may be missing: "not run"
    if missing:
        print(f"[evidence] error: {out / 'jobs'} lacks {len(missing)} of {len(jobs)} job results "
              f"(e.g. {missing[0]}.json): --report-only rebuilds from finished jobs only; run "
              f"without it to compute them", file=sys.stderr)
        return 1
    results = load_results(out, jobs)
    seconds = wall_seconds(out) if (out / "wall_seconds.json").exists() else None
    write_report(out, p, evidence_claims(p, results), seconds)
    append_appendix(out, p, results)
    print(f"[evidence] report rebuilt from {len(results)} job results: {out / 'findings.md'}")
    return 0
