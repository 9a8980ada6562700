"""The evidence profile's plan, run end to end at the smoke sizes, and resumed."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from workbench.experiments import evidence, findings
from workbench.training.settings import LEARNING_REGIME


def test_plan_covers_every_claim_input():
    p = evidence.PROFILES["cpu"]
    jobs = evidence.plan(p)
    names = [j.name for j in jobs]
    assert len(names) == len(set(names))  # one result file per job
    assert sum(j.stage == "pretrain" for j in jobs) == 2 * len(p.seeds) >= 6
    assert sum(j.stage == "sweep" for j in jobs) == len(p.sweep_ratios) * len(p.sweep_seeds)
    # ratios on both sides of MAE's 0.6-0.9 band, each run as long as the pretraining runs (the
    # learning regime), every probe at the learning criterion's sizes
    assert min(p.sweep_ratios) < 0.6 and sum(0.6 <= r <= 0.9 for r in p.sweep_ratios) >= 2
    assert p.sweep_steps == p.steps == LEARNING_REGIME["steps"] and p.data == "shapes"
    assert (p.probe_train, p.probe_test) == (1024, 2048) and len(p.sweep_seeds) >= 3
    assert p.hessian_batches * len(p.seeds) >= 18 and p.hessian_k == 5
    for j in jobs:  # every input a job needs is a job of the plan
        assert set(j.needs()) <= set(names)
    measure = next(j for j in jobs if j.stage == "measure")
    assert measure.needs() == ["pretrain-mae-seed0", "pretrain-mff-seed0"]


def test_smoke_profile_runs_resumes_and_reports(tmp_path, capsys):
    out = tmp_path / "ev"
    assert evidence.main(["--profile", "smoke", "--out", str(out), "--jobs", "2"]) == 0
    claims = json.loads((out / "claims.json").read_text())
    assert len(claims) == 10
    assert claims[-1]["claim"] == "MFF-MAE's features become useful faster during pretraining"
    assert claims[0]["claim"].startswith("the fusion weights move further toward shallow")
    # 2-step runs learn nothing: every claim about them is "not testable", with the runs named
    # (but the supervised run's own, which needs no pretraining)
    for c in claims:
        supervised = c["claim"].startswith("with a supervised objective")
        assert (c["verdict"] == "not testable") != supervised, c["claim"]
        assert supervised or "do not pass the learning criterion" in c["note"]
        assert {"p_adjusted", "sesoi"} <= c.keys()
    for c in claims:
        assert {"effect", "ci", "p", "n", "test", "verdict", "sizes"} <= c.keys()
        assert c["verdict"] in findings.VERDICTS and len(c["ci"]) == 2
    assert {c["sizes"]["seeds"] for c in claims} >= {2}  # the smoke profile's two seeds
    report = (out / "findings.md").read_text()
    assert report.startswith("# Findings") and "(smoke profile)" in report
    # the appendix: every run's learning check, the controls, the figures
    assert "| MFF-MAE seed 1 |" in report and "sweep MAE, mask ratio 0.75, seed 0" in report
    assert "## Controls: trained against initialisation" in report
    for name in ("learning_curves", "fusion_trajectories", "frequency_seeds"):
        assert (out / f"{name}.png").stat().st_size > 0 and f"({name}.png)" in report
    assert "2 pretraining seeds" in report and (out / "forest.png").stat().st_size > 0
    log = capsys.readouterr().out
    assert "pretrain 4/4" in log and "measure 2/2" in log  # a line per job and stage
    # again: every job is done, nothing runs, the same claims come out
    before = {p.name: p.stat().st_mtime_ns for p in (out / "jobs").iterdir()}
    assert evidence.main(["--profile", "smoke", "--out", str(out)]) == 0
    assert "14 of 14 jobs already done" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in (out / "jobs").iterdir()} == before
    assert json.loads((out / "claims.json").read_text()) == claims
    # a lost result is redone alone, from the finished training run
    (out / "jobs" / "measure-seed1.json").unlink()
    assert evidence.main(["--profile", "smoke", "--out", str(out)]) == 0
    log = capsys.readouterr().out
    assert "13 of 14 jobs already done" in log and "measure 2/2: measure-seed1" in log
    assert json.loads((out / "claims.json").read_text()) == claims
    # the report rebuilds from the job files alone: no runs, nothing trained
    import shutil

    copy = tmp_path / "committed"
    shutil.copytree(out / "jobs", copy / "jobs")
    assert evidence.main(["--profile", "smoke", "--out", str(copy), "--report-only"]) == 0
    assert json.loads((copy / "claims.json").read_text()) == claims
    assert (copy / "findings.md").read_text().split("## The learning")[1] == \
        report.split("## The learning")[1]
    assert not (copy / "runs").exists()
    (copy / "jobs" / "hessian-mae-seed0.json").unlink()
    assert evidence.main(["--profile", "smoke", "--out", str(copy), "--report-only"]) == 1
    assert "lacks 1 of 14 job results" in capsys.readouterr().err


def test_a_second_run_on_the_same_folder_is_refused(tmp_path, capsys):
    from workbench.core.io import file_lock

    out = tmp_path / "ev"
    with file_lock(out / ".lock", 0, holder="test"):
        assert evidence.main(["--profile", "smoke", "--out", str(out)]) == 1
    assert "held by another evidence run" in capsys.readouterr().err
    assert not (out / "jobs").exists()  # nothing ran


@pytest.mark.parametrize("bad", [["--jobs", "0"], ["--profile", "nope"]])
def test_bad_arguments_are_named(bad, capsys):
    with pytest.raises(SystemExit):
        evidence.main(bad)
    assert bad[0] in capsys.readouterr().err


def test_the_committed_cpu_evidence_rebuilds_from_its_job_files(tmp_path):
    """docs/results/cpu-evidence: --report-only on a copy of its jobs/ gives the committed
    claims.json and findings tables again; and every pretraining run in it has learned (the
    learning criterion, per seed), so its claims are about trained models."""
    import shutil

    committed = Path(__file__).resolve().parents[1] / "docs" / "results" / "cpu-evidence"
    shutil.copytree(committed / "jobs", tmp_path / "jobs")
    assert evidence.main(["--profile", "cpu", "--out", str(tmp_path), "--report-only"]) == 0
    assert json.loads((tmp_path / "claims.json").read_text()) == \
        json.loads((committed / "claims.json").read_text())
    ours, theirs = ((d / "findings.md").read_text() for d in (tmp_path, committed))
    assert ours.split("Verdicts:")[1] == theirs.split("Verdicts:")[1]
    for name in ("learning_curves", "fusion_trajectories", "frequency_seeds", "forest"):
        assert (tmp_path / f"{name}.png").stat().st_size > 0
    for seed in evidence.PROFILES["cpu"].seeds:
        measured = json.loads((committed / "jobs" / f"measure-seed{seed}.json").read_text())
        assert all(rec["passed"] for rec in measured["result"]["learning"].values())
